"""Entropy-coded E8 lattice quantization (issue 10): research code for the encoder.
Not a registered codec yet: see bench/RESULTS.md, "Entropy-constrained quantizers"."""
