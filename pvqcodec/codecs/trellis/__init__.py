"""Codec id 2, `trellis`: QTIP's bitshift trellis with computed codes (spec codecs/trellis.md).

The transformed matrix W' (rows x cols) is cut into 16 x 16 tiles (zero padding at
the right and bottom edges, discarded by the decoder). Each tile is one trellis
sequence of T = 256 weights in row-major order, coded as a circular bit string of
exactly 256 * k bits (eight k 32-bit words): the state of step t is the L-bit window
of the string starting at bit t * k * V, and it emits V values of the tensor's code
(1MAD, 3INST or HYB). Decoded value (spec 6.3.7):

    y = c_v(s_t) * a_r,    a_r = scale            (no row scales)
                           a_r = f32(h_r) * scale  (row scales: h_r float16)

in float32, each operation rounded to nearest. Every bit string is a valid code:
a decoder finds nothing to reject in the trellis words.
"""

import functools
import math

import numpy as np
from construct import Float32l, Int8ul, Struct

from ...coding import StreamSpec
from ...errors import InputError, ParamsInvalid
from ...params import parse_exact
from .. import BlockQuantizer, Codec, Encoded, register
from ..rows import decode_row_scales
from . import codes
from .bitstream import states_to_words, words_to_states
from .gpu_viterbi import check_cuda
from .viterbi import viterbi_encode

TILE_ROWS = 16
TILE_COLS = 16
TILE = TILE_ROWS * TILE_COLS  # weights per trellis sequence
MAX_L = 16
MAX_K = 8  # format limit (k * V <= L <= 16); the encoder supports k = 1..4
ENCODER_K = (1, 2, 3, 4)
DEFAULT_L = 12
FLAG_ROW_SCALES = 1  # bit 0 of `flags`; bits 1-7 reserved
# The encoder's default code (bench/RESULTS.md): 1MAD is the most accurate at 3 and 4 bits,
# within 0.08 dB of 3INST at 2 bits (L = 12; equal at L = 16), and the fastest of the three
# in the GPU kernels. HYB is never the most accurate (V = 2 leaves fewer paths per value).
DEFAULT_CODE = "1mad"
ENCODE_DEVICES = ("cpu", "cuda")  # Numba, or the same search on a GPU (gpu_viterbi.py)
ENCODE_BAND_WEIGHTS = 1 << 22  # the encoder works on bands of tile rows of about this many weights
DECODE_BAND_WEIGHTS = 1 << 20  # and the decoder


def tile_grid(rows: int, cols: int) -> tuple:
    """(tile rows, tile columns) of the matrix."""
    return -(-rows // TILE_ROWS), -(-cols // TILE_COLS)


def words_per_tile(k: int) -> int:
    return TILE * k // 32


@functools.lru_cache(maxsize=16)
def _lut(code: int, L: int) -> np.ndarray:
    """(V, 2^L) float32 code values of every state (read-only, cached)."""
    lut = codes.code_lut(code, L)
    lut.setflags(write=False)
    return lut


@register
class TrellisCodec(Codec):
    id = 2
    name = "trellis"
    encode_devices = ENCODE_DEVICES  # --device: where the Viterbi search runs
    rates = ENCODER_K
    params_struct = Struct(
        "code" / Int8ul,
        "L" / Int8ul,
        "k" / Int8ul,
        "flags" / Int8ul,
        "scale" / Float32l,
    )

    # ---- format (spec 6.3.1, 6.3.4) ------------------------------------------------------

    def parse_params(self, raw, rows, cols, dtype):
        p = parse_exact(self.params_struct, raw, "trellis codec")
        code, L, k = p["code"], p["L"], p["k"]
        if code not in codes.CODE_NAMES:
            raise ParamsInvalid(f"trellis code {code} unknown (0 1mad, 1 3inst, 2 hyb)")
        if not 1 <= k <= MAX_K:
            raise ParamsInvalid(f"trellis k {k} outside 1..{MAX_K}")
        kv = k * codes.CODE_V[code]
        if not kv <= L <= MAX_L:
            raise ParamsInvalid(f"trellis L {L} outside k*V..{MAX_L} = {kv}..{MAX_L}")
        if p["flags"] & ~FLAG_ROW_SCALES:
            raise ParamsInvalid(f"trellis flags {p['flags']:#04x} set reserved bits (only bit 0, row_scales, "
                                f"is defined)")
        p["row_scales"] = bool(p["flags"] & FLAG_ROW_SCALES)
        scale = np.float32(p["scale"])
        if not np.isfinite(scale):
            raise ParamsInvalid("trellis scale is not finite")
        p["scale"] = scale
        return p

    def build_params(self, params):
        return self.params_struct.build(
            dict(code=params["code"], L=params["L"], k=params["k"],
                 flags=FLAG_ROW_SCALES if params["row_scales"] else 0, scale=float(np.float32(params["scale"]))))

    def streams(self, params, rows, cols, dtype):
        ti, tj = tile_grid(rows, cols)
        out = [StreamSpec("trellis", ti * tj * words_per_tile(params["k"]), 32)]
        if params["row_scales"]:
            out.append(StreamSpec("row_scales", rows, 16))
        return out

    def describe(self, params):
        code = params["code"]
        return {
            "name": self.name,
            "code": codes.CODE_NAMES.get(code, str(code)),
            "L": params["L"],
            "k": params["k"],
            "V": codes.CODE_V.get(code),
            "tile": f"{TILE_ROWS}x{TILE_COLS}",
            "row_scales": bool(params["row_scales"]),
            "scale": float(params["scale"]),
        }

    # ---- decoder (spec 6.3.7) -------------------------------------------------------------

    def decode(self, params, rows, cols, dtype, streams):
        code, L, k = params["code"], params["L"], params["k"]
        ti, tj = tile_grid(rows, cols)
        words = np.asarray(streams[0], np.uint32).reshape(ti * tj, words_per_tile(k))
        a = decode_trellis_scales(params, streams[1] if params["row_scales"] else None, rows)
        out = np.empty((rows, cols), np.float32)
        band = max(1, DECODE_BAND_WEIGHTS // (TILE * tj))  # tile rows at a time: bounded temporaries
        for i0 in range(0, ti, band):
            i1 = min(ti, i0 + band)
            r0, r1 = TILE_ROWS * i0, min(rows, TILE_ROWS * i1)
            c = decode_trellis_codes(words[i0 * tj : i1 * tj], code, L, k)
            out[r0:r1] = decode_trellis_values(tiles_to_matrix(c, r1 - r0, cols), a[r0:r1])
        return out

    # ---- encoder ----------------------------------------------------------------------------

    @classmethod
    def add_cli_arguments(cls, group):
        group.add_argument("--trellis-L", type=int, default=DEFAULT_L, metavar="L",
                           help=f"trellis: state bits, k*V..{MAX_L} (default {DEFAULT_L}); more is better and "
                                f"slower: on 2 cores about 5 M weights/s at L=8, 1 M at 12, 0.05 M at 16 (QTIP's); "
                                f"with --device cuda about 20 M at 16 on an H100")
        group.add_argument("--code", "--trellis-code", dest="trellis_code", choices=sorted(codes.CODE_IDS),
                           default=DEFAULT_CODE, help=f"trellis: the computed code (default {DEFAULT_CODE})")
        group.add_argument("--trellis-row-scales", action="store_true",
                           help="trellis: a float16 scale per row (pays only without an RHT)")

    @classmethod
    def options_from_args(cls, args):
        return {"trellis_L": args.trellis_L, "code": args.trellis_code, "row_scales": args.trellis_row_scales}

    def encode(self, wp, options, weighting=None):
        return encode_trellis(wp, options, weighting)

    @classmethod
    def check_encode_device(cls, device):
        """InputError unless the encoder can search on `device` in this process."""
        if encode_device({"device": device}) == "cuda":
            check_cuda()

    def block_quantizer(self, wp, options, free):
        return TrellisBlockQuantizer(wp, options, free)


# ---- decode arithmetic: the one place in Python --------------------------------------------


def decode_trellis_codes(words: np.ndarray, code: int, L: int, k: int) -> np.ndarray:
    """(n tiles, 8k) words -> (n tiles, 256) float32 code values in sequence order (6.3.3, 6.3.6)."""
    V = codes.CODE_V[code]
    states = words_to_states(words, L, k * V)  # (n, S)
    lut = _lut(code, L)  # (V, 2^L)
    return np.ascontiguousarray(lut.T[states].reshape(words.shape[0], TILE))


def tiles_to_matrix(tiles: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(n tiles, 256) in tile order -> the rows x cols matrix (6.3.2): tile (I, J) is number
    I * tile_cols + J, its value n at row 16 I + n div 16, column 16 J + n mod 16."""
    ti, tj = tile_grid(rows, cols)
    m = tiles.reshape(ti, tj, TILE_ROWS, TILE_COLS).transpose(0, 2, 1, 3).reshape(ti * TILE_ROWS, tj * TILE_COLS)
    return m[:rows, :cols]


def matrix_to_tiles(m: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """The inverse of tiles_to_matrix, padding with `fill`: (n tiles, 256)."""
    rows, cols = m.shape
    ti, tj = tile_grid(rows, cols)
    pad = np.full((ti * TILE_ROWS, tj * TILE_COLS), fill, m.dtype)
    pad[:rows, :cols] = m
    return pad.reshape(ti, TILE_ROWS, tj, TILE_COLS).transpose(0, 2, 1, 3).reshape(ti * tj, TILE)


def decode_trellis_scales(params: dict, row_sym, rows: int) -> np.ndarray:
    """The float32 factor a_r of each row (6.3.5), shape (rows, 1)."""
    scale = np.float32(params["scale"])
    if row_sym is None:
        return np.full((rows, 1), scale, np.float32)
    return (decode_row_scales(row_sym, "trellis") * scale)[:, None]


def decode_trellis_values(c: np.ndarray, a: np.ndarray) -> np.ndarray:
    """y = c * a_r in float32 (one rounding)."""
    return np.ascontiguousarray(c * a, np.float32)


# ---- encoder ---------------------------------------------------------------------------------


def rate_bits(bits) -> int:
    """The integer k of --bits, or InputError."""
    try:
        b = float(bits)
    except (TypeError, ValueError):
        raise InputError(f"trellis --bits must be an integer 1..4, got {bits!r}") from None
    if b != math.floor(b) or int(b) not in ENCODER_K:
        raise InputError(f"trellis --bits must be an integer k in 1..4 (bits per weight of the trellis), got {bits}")
    return int(b)


def code_id(name) -> int:
    if name is None:
        name = DEFAULT_CODE
    if isinstance(name, (int, np.integer)) and int(name) in codes.CODE_NAMES:
        return int(name)
    try:
        return codes.CODE_IDS[str(name).lower()]
    except KeyError:
        raise InputError(f"trellis --code must be one of {', '.join(sorted(codes.CODE_IDS))}, got {name!r}") from None


# Informative encoder policy: the code's RMS relative to the data's RMS before the Viterbi
# search is GAIN[code][k] * sqrt(1 - 2^-2k) (the rate-distortion optimum for a Gaussian has
# a reconstruction of variance sigma^2 - D; the factor is the best one measured on N(0, 1)
# at L = 16, T = 256, see bench/RESULTS.md). The scale is refit by least squares afterwards.
GAIN = {
    codes.CODE_1MAD: {1: 1.0, 2: 1.05, 3: 1.08, 4: 1.10},
    codes.CODE_3INST: {1: 1.0, 2: 1.04, 3: 1.06, 4: 1.12},
    codes.CODE_HYB: {1: 1.0, 2: 1.05, 3: 1.10, 4: 1.20},
}


def default_gain(code: int, k: int) -> float:
    return GAIN[code][k] * math.sqrt(1.0 - 2.0 ** (-2 * k))


def encode_device(options: dict) -> str:
    """Where the Viterbi search runs: options["device"], cpu (default) or cuda."""
    device = options.get("device") or "cpu"
    if device not in ENCODE_DEVICES:
        raise InputError(f"trellis encoder device must be one of {', '.join(ENCODE_DEVICES)}, got {device!r}")
    return device


def viterbi_search(xt, wt, code: int, L: int, k: int, mode: str = "two-pass", workers=None, seam=None,
                   device: str = "cpu") -> np.ndarray:
    """The states (n, S) chosen by the Viterbi search for sequences xt (n, S, V) with weights wt:
    Numba on the CPU, or the same search on a CUDA GPU, which finds the same states."""
    if device == "cuda":
        from .gpu_viterbi import viterbi_encode_gpu

        return viterbi_encode_gpu(xt, wt, code, L, k, mode=mode, seam=seam)[0]
    return viterbi_encode(xt, wt, _lut(code, L), L, k * codes.CODE_V[code], mode=mode, workers=workers, seam=seam)[0]


def encode_trellis(wp: np.ndarray, options: dict, weighting=None) -> Encoded:
    """Options: bits (k), code, trellis_L, row_scales, device (cpu or cuda: where the Viterbi
    search runs, same result); for experiments also tail_biting ("two-pass", "exact"), seam
    (steps of the first pass on each side of the seam), gain (the code's RMS over the data's
    before the search) and workers (Numba threads)."""
    wp = np.asarray(wp, np.float64)
    rows, cols = wp.shape
    k = rate_bits(options["bits"])
    code = code_id(options.get("code"))
    V = codes.CODE_V[code]
    kv = k * V
    L = int(options.get("trellis_L") or DEFAULT_L)
    if not kv <= L <= MAX_L:
        raise InputError(f"--trellis-L must be in {kv}..{MAX_L} for k={k} with the {codes.CODE_NAMES[code]} code, "
                         f"got {L}")
    row_scales = bool(options.get("row_scales"))
    mode = options.get("tail_biting") or "two-pass"
    if mode not in ("two-pass", "exact"):
        raise InputError(f"trellis tail_biting must be two-pass or exact, got {mode!r}")
    device = encode_device(options)
    if device == "cuda":
        if mode != "two-pass":
            raise InputError(f"trellis tail_biting {mode} runs on the cpu only (--device cpu)")
        check_cuda()
    gain = float(options.get("gain") or default_gain(code, k))
    w = None if weighting is None else np.broadcast_to(np.asarray(weighting, np.float64), wp.shape)

    # Normalize (per row or per tensor) so that the code's RMS is `gain` times the data's.
    if row_scales:
        rms = np.sqrt(np.mean(wp * wp, axis=1))
    else:
        rms = np.full(rows, math.sqrt(float(np.mean(wp * wp))) if wp.size else 0.0)
    unit = rms * gain / codes.code_rms(code, L)  # first guess of each row's factor a_r
    live = unit > 0
    safe = np.where(live, unit, 1.0)
    lut = _lut(code, L)

    # Viterbi over the tiles, a band of tile rows at a time (bounded memory); collect the
    # least-squares sums of each row for the scale refit.
    tr, tc = tile_grid(rows, cols)
    steps = TILE // V
    states = np.empty((tr * tc, steps), np.int64)
    num = np.zeros(rows)
    den = np.zeros(rows)
    band = max(1, ENCODE_BAND_WEIGHTS // (TILE * tc))
    for i0 in range(0, tr, band):
        r0, r1 = TILE_ROWS * i0, min(rows, TILE_ROWS * (i0 + band))
        blk = wp[r0:r1]
        wb = np.ones_like(blk) if w is None else np.array(w[r0:r1], np.float64)
        wb[~live[r0:r1]] = 0.0
        xt = matrix_to_tiles(blk / safe[r0:r1, None]).reshape(-1, steps, V)
        wt = matrix_to_tiles(wb).reshape(-1, steps, V)  # padding: weight 0, it costs nothing
        st = viterbi_search(xt, wt, code, L, k, mode, options.get("workers"), options.get("seam"), device)
        states[i0 * tc : i0 * tc + st.shape[0]] = st
        c = tiles_to_matrix(lut.T[st].reshape(-1, TILE), r1 - r0, cols).astype(np.float64)
        wc = wb * c
        num[r0:r1] = np.sum(wc * blk, axis=1)
        den[r0:r1] = np.sum(wc * c, axis=1)

    # Least-squares refit of the scale(s) for the chosen paths, in the (weighted) metric.
    words = states_to_words(states, L, kv).reshape(-1)
    if row_scales:
        a_r = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
        nz = a_r[a_r != 0]
        scale = np.float32(math.sqrt(float(np.mean(nz * nz)))) if nz.size else np.float32(0.0)
        h = (a_r / float(scale) if scale != 0 else np.zeros(rows)).astype(np.float16)
        streams_out = [words, h.view(np.uint16)]
    else:
        tot = float(den.sum())
        scale = np.float32(float(num.sum()) / tot if tot > 0 else 0.0)
        streams_out = [words]
    params = {"code": code, "L": L, "k": k, "row_scales": row_scales, "scale": scale}
    info = {"code": codes.CODE_NAMES[code], "L": L, "k": k}
    if row_scales:
        info["row_scales"] = True
    return Encoded(params, streams_out, info)


class TrellisBlockQuantizer(BlockQuantizer):
    """Blocks of 16 columns: one column of 16 x 16 tiles, each tile one trellis sequence
    (spec 6.3.2), with the code, L, k and scales of a data-free encoding fixed; each block
    runs the same Viterbi search. The global scale is refit afterwards (`components`)."""

    width = TILE_COLS
    unit_rows = TILE_ROWS

    def __init__(self, wp, options, free: Encoded):
        p = free.params
        self.params = dict(p)
        self.code, self.L, self.k = p["code"], p["L"], p["k"]
        self.V = codes.CODE_V[self.code]
        self.h = np.asarray(free.streams[1], np.uint16) if p["row_scales"] else None
        self.rows, self.cols = wp.shape
        self.a = decode_trellis_scales(p, self.h, self.rows)  # (rows, 1) float32
        self.lut = _lut(self.code, self.L)
        self.mode = options.get("tail_biting") or "two-pass"
        self.workers, self.seam = options.get("workers"), options.get("seam")
        self.device = encode_device(options)

    def quantize(self, k, X, weight=None):
        rows, w = X.shape
        a = self.a[:, 0].astype(np.float64)
        live = a != 0
        xn = np.zeros((rows, w))
        xn[live] = X[live] / a[live, None]
        wb = np.ones((rows, w)) if weight is None else np.repeat(np.asarray(weight, np.float64)[None, :], rows, 0)
        wb[~live] = 0.0
        steps = TILE // self.V
        xt = matrix_to_tiles(xn).reshape(-1, steps, self.V)
        wt = matrix_to_tiles(wb).reshape(-1, steps, self.V)  # padding: weight 0
        st = viterbi_search(xt, wt, self.code, self.L, self.k, self.mode, self.workers, self.seam, self.device)
        c = tiles_to_matrix(self.lut.T[st].reshape(-1, TILE), rows, w)
        return np.asarray(decode_trellis_values(c, self.a), np.float64), [st]

    def _states(self, blocks):
        ti = blocks[0][0].shape[0]
        return np.stack([c[0] for c in blocks], axis=1).reshape(ti * len(blocks), -1)

    def components(self, blocks):
        st = self._states(blocks)
        c = tiles_to_matrix(self.lut.T[st].reshape(-1, TILE), self.rows, self.cols).astype(np.float64)
        scale = np.float32(self.params["scale"])
        factor = self.a[:, 0].astype(np.float64) / float(scale) if scale != 0 else np.zeros(self.rows)
        return [c * factor[:, None]], np.array([scale], np.float32)

    def finish(self, blocks, scales=None):
        words = states_to_words(self._states(blocks), self.L, self.k * self.V).reshape(-1)
        params = dict(self.params)
        if scales is not None:
            params["scale"] = np.float32(scales[0])
        streams = [words] + ([self.h] if self.h is not None else [])
        info = {"code": codes.CODE_NAMES[self.code], "L": self.L, "k": self.k}
        return Encoded(params, streams, info)
