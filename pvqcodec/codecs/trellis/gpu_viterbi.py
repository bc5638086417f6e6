"""The trellis encoder's Viterbi search on a CUDA GPU (`pvqcodec encode --device cuda`).

The kernel (gpu_decoder/trellis_viterbi.cu) runs the search of viterbi.py: the same tail-biting
two passes (QTIP's Algorithm 4, with the same `seam`), the same float32 arithmetic with every
operation rounded in the same order, and the same tie-breaking (the first minimum). It takes the
code values from the decoder's own device functions (gpu_decoder/trellis.cuh), which are bit-exact
with codes.py. So it returns the states and costs of `viterbi_encode`, bit for bit; the codec
builds the file from them as it does on the CPU (scale refit, words, streams).

Needs torch with CUDA and the `gpu_decoder` package of a source checkout (its kernels build on
first use: nvcc and ninja). Only "two-pass" (the encoder's default) and "free" run here; the
"exact" tail-biting search (every overlap) stays on the CPU.
"""

import numpy as np

from ...errors import InputError
from . import codes

MODES = ("two-pass", "free")
TILES_PER_CALL = 1 << 16  # bounds the device memory of one call (x, w: 128 MB)


def cuda_problem():
    """Why the GPU encoder cannot run in this process (a one-line reason), or None."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    try:
        from ...torch import gpu_kernels

        gpu_kernels()
    except ImportError:
        return "the GPU kernels (gpu_decoder/, beside pvqcodec/ in a source checkout) are not there"
    return None


def check_cuda():
    """InputError with the reason if the GPU encoder cannot run."""
    problem = cuda_problem()
    if problem:
        raise InputError(f"--device cuda: {problem}")


def viterbi_encode_gpu(x: np.ndarray, w: np.ndarray, code: int, L: int, k: int, mode: str = "two-pass",
                       seam: int = None, device="cuda"):
    """As viterbi.viterbi_encode, on a GPU: sequences x (n, S, V) with weights w (broadcast to
    x's shape), the code's id instead of its table. Returns (states (n, S) int64, costs (n,)
    float32) as numpy arrays, equal to viterbi_encode's."""
    if mode not in MODES:
        raise ValueError(f"the GPU Viterbi search runs modes {', '.join(MODES)}, not {mode!r}")
    V = codes.CODE_V[code]
    S = 256 // V
    if not 1 <= k <= 4 or not k * V <= L <= 16:
        raise ValueError(f"the GPU Viterbi search needs 1 <= k <= 4 and k*V <= L <= 16, got k={k}, L={L}")
    x = np.require(x, np.float32, ["C", "W"])  # torch.from_numpy wants writable arrays
    if x.ndim != 3 or x.shape[1:] != (S, V):
        raise ValueError(f"x has shape {x.shape}, expected (n, {S}, {V})")
    w = np.require(np.broadcast_to(np.asarray(w, np.float32), x.shape), np.float32, ["C", "W"])
    seam = S // 2 if seam is None else max(1, int(seam))
    if seam > 4096:
        raise ValueError(f"seam {seam} above 4096 steps")
    check_cuda()
    import torch

    from ...torch import gpu_kernels

    g = gpu_kernels()
    dev = torch.device(device)
    n = x.shape[0]
    states = np.empty((n, S), np.int64)
    costs = np.empty(n, np.float32)
    for i0 in range(0, n, TILES_PER_CALL):
        i1 = min(n, i0 + TILES_PER_CALL)
        xt = torch.from_numpy(x[i0:i1].reshape(i1 - i0, 256)).to(dev)
        wt = torch.from_numpy(w[i0:i1].reshape(i1 - i0, 256)).to(dev)
        st, c = g.trellis_viterbi(xt, wt, code, L, k, seam, mode == "two-pass")
        states[i0:i1] = st.cpu().numpy()
        costs[i0:i1] = c.cpu().numpy()
    return states, costs
