"""Decode throughput of the C reference decoder beside the Python reference decoder.

Both decoders run on one core (NUMBA_NUM_THREADS=1 and one BLAS thread for Python; the C
decoder is single-threaded, called through its cffi binding, built with -O3) over the
same .pvqc files, each holding one Gaussian rows x cols matrix encoded with one codec
setting. Reported: weights per second for decoding the tensor to float32 (codec and
inverse transform), best of --repeat runs after a warm-up. Not timed: Numba's compilation
and the payload CRCs, which both decoders verify once per open file (in the warm-up). The C
handle also keeps the last checked tensor's decoded rans streams, so its open-file time
leaves out the rans decoding that the Python decoder repeats on every call; the column "C,
new handle" times a fresh handle per decode (CRCs, rans decoding, the codec's checks and
the decode: everything `pvqdec` does for the tensor).

    python bench/decode_throughput.py                 # 2048 x 4096, every setting
    python bench/decode_throughput.py --quick         # 512 x 1024, a smoke run
"""

import os

# One core for the Python decoder: set before numpy and numba are imported.
for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from pvqcodec.api import PvqcFile  # noqa: E402
from pvqcodec.cli import main as pvqcodec_main  # noqa: E402
from pvqcodec.safetensors_io import write_safetensors  # noqa: E402

# (label, encode arguments). "raw" keeps the tensor exactly (codec 0).
SETTINGS = [
    ("raw float32 (exact)", ["--keep", ".*"]),
    ("pvq D=8, 2 bits, rht", ["--codec", "pvq", "--bits", "2", "--group-size", "8"]),
    ("pvq D=32, 2 bits, rht", ["--codec", "pvq", "--bits", "2", "--group-size", "32"]),
    ("pvq D=32, 2 bits, identity", ["--codec", "pvq", "--bits", "2", "--group-size", "32", "--transform", "identity"]),
    ("pvq D=64, 4 bits, rht", ["--codec", "pvq", "--bits", "4", "--group-size", "64"]),
    ("pvq D=128, 3 bits, rht", ["--codec", "pvq", "--bits", "3", "--group-size", "128"]),
    ("trellis 1mad k=2 L=12, rht", ["--codec", "trellis", "--bits", "2", "--trellis-L", "12", "--code", "1mad"]),
    ("trellis 3inst k=3 L=12, rht", ["--codec", "trellis", "--bits", "3", "--trellis-L", "12", "--code", "3inst"]),
    ("trellis hyb k=2 L=12, rht", ["--codec", "trellis", "--bits", "2", "--trellis-L", "12", "--code", "hyb"]),
    ("lattice 2 bits (1 stage), rht", ["--codec", "lattice", "--bits", "2"]),
    ("lattice 3 bits (2 stages), rht", ["--codec", "lattice", "--bits", "3"]),
    ("lattice 4 bits (3 stages), rht", ["--codec", "lattice", "--bits", "4"]),
    # entropy-coded codecs (rans payloads): the "new handle" column includes the rans decoding
    ("ecsq 2 bits, rht", ["--codec", "ecsq", "--bits", "2"]),
    ("ectcq 256 states, 2 bits, rht", ["--codec", "ectcq", "--bits", "2"]),
    ("ectcq 256 states, 2 bits, identity", ["--codec", "ectcq", "--bits", "2", "--transform", "identity"]),
    ("ectcq 8 states, 4 bits, rht", ["--codec", "ectcq", "--bits", "4", "--ectcq-states", "8"]),
    ("eclattice 2 bits, rht", ["--codec", "eclattice", "--bits", "2"]),
    ("eclattice 2 bits, identity", ["--codec", "eclattice", "--bits", "2", "--transform", "identity"]),
    ("eclattice 4 bits, rht", ["--codec", "eclattice", "--bits", "4"]),
]


# Wall time by default; --cpu-time takes the process's CPU time (both decoders are single-
# threaded), the closer estimate of a quiet core on a machine shared with other jobs.
CLOCK = {"name": "wall time", "fn": time.perf_counter}


def best_time(fn, repeat):
    fn()  # warm-up (Numba cache load, page faults)
    best = float("inf")
    clock = CLOCK["fn"]
    for _ in range(repeat):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def new_handle_decode(data: bytes):
    from pvqcodec.cdecoder import CDecoder

    with CDecoder.from_bytes(data) as f:
        return f.decode("w")


def run(rows, cols, repeat, settings):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    results = []
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "w.safetensors")
        write_safetensors(src, [("w", "F32", w.shape, lambda: w)])
        for label, args in settings:
            path = os.path.join(d, "w.pvqc")
            if pvqcodec_main(["encode", src, path, "-q", *args]) != 0:
                raise SystemExit(f"encode failed for {label}")
            with PvqcFile(path) as f:
                bpw = f.info("w")["bits_per_weight"]
                py = f.decode("w")
                c = f.decode("w", decoder="c")
                same = py.tobytes() == c.tobytes()
                t_py = best_time(lambda: f.decode("w"), repeat)
                t_c = best_time(lambda: f.decode("w", decoder="c"), repeat)
            with open(path, "rb") as fh:
                data = fh.read()
            t_new = best_time(lambda: new_handle_decode(data), repeat)
            n = rows * cols
            results.append((label, bpw, n / t_py, n / t_c, t_py / t_c, same, n / t_new))
            print(f"{label:32s} {bpw:6.3f} bpw  python {n / t_py / 1e6:8.2f} Mw/s  C {n / t_c / 1e6:8.2f} Mw/s  "
                  f"C/python {t_py / t_c:6.2f}x  bit-exact {same}  C new handle {n / t_new / 1e6:8.2f} Mw/s",
                  flush=True)
    return results


def markdown(results, rows, cols, repeat):
    lines = [
        f"Matrix {rows} x {cols} float32 (Gaussian), one core each, best of {repeat} after a warm-up "
        f"({CLOCK['name']}); "
        f"{platform.machine()}, Python {platform.python_version()}, numpy {np.__version__}.",
        "",
        "| setting | bits/weight | Python decoder (M weights/s) | C decoder (M weights/s) | C / Python | same bits "
        "| C, new handle (M weights/s) |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for label, bpw, py, c, ratio, same, new in results:
        lines.append(f"| {label} | {bpw:.3f} | {py / 1e6:.2f} | {c / 1e6:.2f} | {ratio:.2f}x | {'yes' if same else 'NO'} "
                     f"| {new / 1e6:.2f} |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2048)
    p.add_argument("--cols", type=int, default=4096)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="512 x 1024, one repeat, four settings")
    p.add_argument("--only", metavar="REGEX", help="the settings whose label matches")
    p.add_argument("--cpu-time", action="store_true", help="time with the process's CPU time, not wall time")
    return p.parse_args(argv)


if __name__ == "__main__":
    a = parse_args()
    if a.cpu_time:
        CLOCK.update(name="CPU time", fn=time.process_time)
    settings = SETTINGS
    if a.quick:
        a.rows, a.cols, a.repeat = 512, 1024, 1
        settings = [SETTINGS[0], SETTINGS[2], SETTINGS[6], SETTINGS[10]]
    from pvqcodec import cdecoder

    if not cdecoder.available():
        sys.exit("the C decoder is not built (pip install -e .)")
    if a.only:
        import re

        settings = [st for st in settings if re.search(a.only, st[0])]
    res = run(a.rows, a.cols, a.repeat, settings)
    print()
    print(markdown(res, a.rows, a.cols, a.repeat))
