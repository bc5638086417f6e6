"""The PVQ codec: its decoded value (spec codecs/pvq.md 6.2.5) against a literal scalar
reading of the spec, parameter validation, the rate budget, gain quantizers, weighting."""

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from pvqcodec.codecs import codec_by_name
from pvqcodec.codecs.pvq import choose_rate, encode_pvq, gain
from pvqcodec.codecs.pvq import enumeration
from pvqcodec.coding import RawCoding
from pvqcodec.errors import ParamsInvalid, PayloadCorrupt

PVQ = codec_by_name("pvq")


def round_trip(wp, **opts):
    rows, cols = wp.shape
    enc = PVQ.encode(wp, {"bits": 2.0, **opts})
    raw = PVQ.build_params(enc.params)
    params = PVQ.parse_params(raw, rows, cols, "float32")
    specs = PVQ.streams(params, rows, cols, "float32")
    payloads = [RawCoding.encode(s, spec) for s, spec in zip(enc.streams, specs)]
    streams = [RawCoding.decode(p, spec) for p, spec in zip(payloads, specs)]
    return enc, params, streams, PVQ.decode(params, rows, cols, "float32", streams), payloads


def scalar_decode(params, rows, cols, streams):
    """Section 6.2.5 read literally, one value at a time with numpy float32 scalars."""
    d, k = params["group_size"], params["pulses"]
    gpr = -(-cols // d)
    table = params["gain_table"]
    scales = np.asarray(streams[0], np.uint16).view(np.float16)
    shapes = np.asarray(streams[2], np.uint64).reshape(rows * gpr, -1)
    out = np.zeros((rows, cols), np.float32)
    for r in range(rows):
        for c in range(gpr):
            g = r * gpr + c
            y = enumeration.decode_indices(shapes[g : g + 1], d, k)[0]
            ss = int(sum(int(v) * int(v) for v in y))
            nrm = np.sqrt(np.float32(ss))
            q = int(streams[1][g]) if params["gain_bits"] else 0
            a = np.float32(scales[r]) * np.float32(table[q])
            cc = np.float32(a / nrm)
            for i in range(d):
                col = c * d + i
                if col < cols:
                    out[r, col] = np.float32(cc * np.float32(int(y[i])))
    return out


@given(rows=st.integers(1, 6), cols=st.integers(1, 70), d=st.sampled_from([1, 4, 8, 13, 32, 64]),
       bits=st.sampled_from([1.5, 2.0, 3.0, 4.0]), seed=st.integers(0, 1000))
def test_decode_is_the_spec_arithmetic_bit_for_bit(rows, cols, d, bits, seed):
    wp = np.random.default_rng(seed).standard_normal((rows, cols)) * 3.0
    enc, params, streams, fast, _ = round_trip(wp, group_size=d, bits=bits)
    assert fast.dtype == np.float32 and fast.shape == (rows, cols)
    assert fast.tobytes() == scalar_decode(params, rows, cols, streams).tobytes()


def test_budget_is_respected_including_side_information():
    rng = np.random.default_rng(0)
    for rows, cols, bits, d in ((64, 512, 2.0, 32), (128, 256, 3.0, 64), (32, 1000, 2.25, 16), (16, 96, 4.0, 8)):
        enc, params, streams, _, payloads = round_trip(rng.standard_normal((rows, cols)), group_size=d, bits=bits)
        total_bits = 8 * sum(p.size for p in payloads) + 32 * params["gain_table"].size
        assert total_bits <= math.floor(bits * rows * cols) + 7 * 3  # byte rounding of 3 payloads
        # and it uses the budget: one more pulse would not have fitted
        gb = params["gain_bits"]
        assert choose_rate(bits, rows, cols, d, gb) == params["pulses"]


def test_quality_at_two_bits_on_gaussian_data():
    wp = np.random.default_rng(1).standard_normal((128, 1024))
    _, _, _, out, _ = round_trip(wp, group_size=32)
    mse = float(np.mean((out - wp) ** 2))
    assert mse < 0.110  # Lloyd-Max scalar: 0.1175; measured about 0.104


def test_weighting_changes_the_objective_and_handles_padding():
    rng = np.random.default_rng(2)
    wp = rng.standard_normal((16, 40))  # 40 is not a multiple of 32: padded group
    weights = np.where(np.arange(40) < 8, 100.0, 0.01)[None, :].repeat(16, 0)
    plain = encode_pvq(wp, {"bits": 2.0, "group_size": 32})
    weighted = encode_pvq(wp, {"bits": 2.0, "group_size": 32}, weighting=weights)

    def werr(enc):
        rows, cols = wp.shape
        specs = PVQ.streams(enc.params, rows, cols, "float32")
        streams = [RawCoding.decode(RawCoding.encode(s, sp), sp) for s, sp in zip(enc.streams, specs)]
        out = PVQ.decode(enc.params, rows, cols, "float32", streams)
        return float(np.sum(weights * (out - wp) ** 2))

    assert werr(weighted) < werr(plain)


def test_zero_rows_and_zero_matrix():
    wp = np.zeros((4, 64))
    wp[1] = np.random.default_rng(3).standard_normal(64)
    _, _, _, out, _ = round_trip(wp, group_size=16)
    assert np.all(out[[0, 2, 3]] == 0) and np.all(np.isfinite(out))
    _, _, _, out, _ = round_trip(np.zeros((3, 10)))
    assert np.all(out == 0)


def test_gain_quantizers_order_on_data():
    # Lloyd on the data can only do better than fixed Beta designs on the same data.
    rng = np.random.default_rng(4)
    g = np.sqrt(rng.chisquare(32, 20000))
    errs = {}
    for kind in gain.GAIN_QUANTIZERS:
        lv = gain.design_levels(kind, 3, 32, 4096, g)
        errs[kind] = float(np.mean((g - lv[gain.nearest_level(g, lv)]) ** 2))
    assert errs["empirical"] <= errs["beta-lloyd"] * 1.0001
    assert errs["beta-lloyd"] <= errs["beta-quantile"]


def test_nearest_level():
    lv = np.array([1.0, 2.0, 4.0])
    assert list(gain.nearest_level(np.array([0.0, 1.49, 1.51, 2.9, 3.1, 9.0]), lv)) == [0, 0, 1, 1, 2, 2]


def _raw_params(d=8, k=4, gb=1, table=(1.0, 2.0)):
    return PVQ.build_params({"group_size": d, "pulses": k, "gain_bits": gb, "gain_table": np.array(table, np.float32)})


@pytest.mark.parametrize("d,k,gb,table", [(0, 4, 1, (1, 2)), (257, 4, 1, (1, 2)), (8, 0, 1, (1, 2)),
                                          (8, 5000, 1, (1, 2)), (8, 4, 1, (1, float("nan"))),
                                          (8, 4, 1, (float("inf"), 1)), (256, 4096, 1, (1, 2))])
def test_params_invalid(d, k, gb, table):
    with pytest.raises(ParamsInvalid):
        PVQ.parse_params(_raw_params(d, k, gb, table), 4, 16, "float32")


def test_params_block_must_be_exact():
    raw = _raw_params()
    with pytest.raises(ParamsInvalid):
        PVQ.parse_params(raw + b"\x00", 4, 16, "float32")
    with pytest.raises(ParamsInvalid):
        PVQ.parse_params(raw[:-1], 4, 16, "float32")
    with pytest.raises(ParamsInvalid):  # gain_bits 9 is out of range
        PVQ.parse_params(raw[:4] + b"\x09" + raw[5:], 4, 16, "float32")


def test_payload_corrupt_cases():
    wp = np.random.default_rng(5).standard_normal((4, 32))
    enc, params, streams, _, _ = round_trip(wp, group_size=8)
    bad_scales = np.array(streams[0], np.uint16)
    bad_scales[2] = 0x7C00  # float16 infinity
    with pytest.raises(PayloadCorrupt, match="row 2"):
        PVQ.decode(params, 4, 32, "float32", [bad_scales, streams[1], streams[2]])
    bad_idx = np.array(streams[2], np.uint64).reshape(-1, enumeration.n_limbs(8, params["pulses"])).copy()
    bad_idx[5, 0] = np.uint64(enumeration.pvq_count(8, params["pulses"]))
    with pytest.raises(PayloadCorrupt, match="group 5"):
        PVQ.decode(params, 4, 32, "float32", [streams[0], streams[1], bad_idx])


def test_multilimb_indices_round_trip():
    wp = np.random.default_rng(6).standard_normal((8, 256))
    enc, params, streams, out, _ = round_trip(wp, group_size=128, bits=4.0)
    assert enumeration.index_bits(128, params["pulses"]) > 128
    assert float(np.mean((out - wp) ** 2)) < 0.0075
