"""Quantization helpers that sit beside the codecs: calibration statistics (Hessians),
importance files (llama.cpp imatrix), Hessian-aware rounding and bit allocation.

Nothing here is part of the file format: these modules decide *which* symbols an
encoder emits, never how a decoder reads them.
"""
