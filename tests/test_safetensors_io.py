"""The safetensors reader and writer: round trips, cross-checks with the reference package,
sharded models, and a clear SafetensorsError for every malformed file."""

import json
import os
import struct

import numpy as np
import pytest

from pvqcodec import dtypes
from pvqcodec.errors import InputError, SafetensorsError
from pvqcodec.safetensors_io import MAX_HEADER_SIZE, SafetensorsSource, TensorInfo, write_safetensors

safetensors = pytest.importorskip("safetensors")
from safetensors.numpy import save_file  # noqa: E402

SHAPES = [(), (0,), (5,), (3, 4), (2, 0, 3), (2, 3, 4), (1, 2, 3, 2)]


def _random(shape, name, rng):
    x = np.asarray(rng.standard_normal(shape) * 3, dtype=np.float32)
    return dtypes.from_float32(x, name)


def _const(a):
    return lambda: a


# --- raw file construction ------------------------------------------------------------------


def _raw_file(path, header, data=b"", header_bytes=None, pad=True):
    """Write a safetensors file from a header dict (or raw header bytes) and a data buffer."""
    if header_bytes is None:
        header_bytes = json.dumps(header).encode("utf-8")
    if pad:
        header_bytes += b" " * ((-(8 + len(header_bytes))) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(header_bytes)))
        fh.write(header_bytes)
        fh.write(data)
    return str(path)


def _entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


# --- round trips through our own writer and reader ---------------------------------------------


@pytest.mark.parametrize("name", ["float32", "float16", "bfloat16"])
def test_round_trip_all_ranks(tmp_path, name):
    rng = np.random.default_rng(42)
    st = dtypes.safetensors_dtype(name)
    arrays = {f"t{i}": _random(shape, name, rng) for i, shape in enumerate(SHAPES)}
    path = tmp_path / "m.safetensors"
    write_safetensors(path, [(k, st, a.shape, _const(a)) for k, a in arrays.items()])
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert (8 + n) % 8 == 0
    with SafetensorsSource.open(path) as src:
        assert src.names == sorted(arrays)
        assert src.metadata == {}
        for k, a in arrays.items():
            info = src.info(k)
            assert isinstance(info, TensorInfo)
            assert info.dtype == st and info.dtype_name == name
            assert info.shape == a.shape and info.numel == a.size and info.nbytes == a.nbytes
            assert info.path == str(path)
            got = src.read(k)
            assert got.shape == a.shape and got.dtype == a.dtype
            assert not got.flags.writeable
            assert got.tobytes() == a.tobytes()
            f = src.read_float32(k)
            assert f.dtype == np.float32 and f.shape == a.shape and f.flags.writeable
            assert np.array_equal(f, dtypes.to_float32(a, name))


def test_layout_in_given_order(tmp_path):
    a = np.arange(3, dtype=np.float32)
    b = np.arange(5, dtype=np.float16)
    path = tmp_path / "m.safetensors"
    write_safetensors(path, [("z", "F32", (3,), _const(a)), ("a", "F16", (5,), _const(b))])
    with SafetensorsSource.open(path) as src:
        assert src.info("z").begin < src.info("a").begin
        assert src.info("a").begin == src.info("z").end
        assert src.info("a").end == os.path.getsize(path)


def test_metadata_round_trip(tmp_path):
    meta = {"format": "pt", "note": "ünïcødé", "empty": ""}
    path = tmp_path / "m.safetensors"
    write_safetensors(path, [("x", "F32", (2,), _const(np.ones(2, np.float32)))], metadata=meta)
    with SafetensorsSource.open(path) as src:
        assert src.metadata == meta
    with safetensors.safe_open(str(path), framework="numpy") as f:
        assert f.metadata() == meta


def test_empty_file_no_tensors(tmp_path):
    path = tmp_path / "empty.safetensors"
    write_safetensors(path, [])
    with SafetensorsSource.open(path) as src:
        assert src.names == [] and len(src) == 0


def test_writer_accepts_our_names_and_flat_arrays(tmp_path):
    a = np.arange(6, dtype=np.float32)
    path = tmp_path / "m.safetensors"
    write_safetensors(path, [("x", "float32", (2, 3), _const(a))])
    with SafetensorsSource.open(path) as src:
        assert np.array_equal(src.read("x"), a.reshape(2, 3))


def test_writer_produces_one_at_a_time(tmp_path):
    calls = []

    def make(i):
        def produce():
            calls.append(i)
            assert calls == list(range(i + 1))
            return np.full(4, i, dtype=np.float32)
        return produce

    entries = [(f"t{i}", "F32", (4,), make(i)) for i in range(5)]
    write_safetensors(tmp_path / "m.safetensors", entries)
    assert calls == list(range(5))


def test_writer_big_endian_input(tmp_path):
    a = np.arange(4, dtype=">f4")
    path = tmp_path / "m.safetensors"
    write_safetensors(path, [("x", "F32", (4,), _const(a))])
    with SafetensorsSource.open(path) as src:
        assert np.array_equal(src.read("x"), [0, 1, 2, 3])


def test_writer_non_contiguous_input(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4).T
    path = tmp_path / "m.safetensors"
    write_safetensors(path, [("x", "F32", (4, 3), _const(a))])
    with SafetensorsSource.open(path) as src:
        assert np.array_equal(src.read("x"), a)


@pytest.mark.parametrize(
    "dtype, shape, produced",
    [
        ("F32", (4,), np.zeros(3, np.float32)),  # too few elements
        ("F32", (4,), np.zeros(5, np.float32)),  # too many
        ("F16", (4,), np.zeros(4, np.float32)),  # wrong item size
        ("F32", (4,), np.zeros(8, np.float16)),  # right byte count, wrong float type
        ("BF16", (4,), np.zeros(4, np.float16)),  # float16 is not bfloat16
        ("F32", (2,), np.array(["a", "b"])),  # not numeric
    ],
)
def test_writer_rejects_bad_produced_arrays(tmp_path, dtype, shape, produced):
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"old")
    with pytest.raises(ValueError):
        write_safetensors(path, [("ok", "F32", (1,), _const(np.ones(1, np.float32))),
                                 ("x", dtype, shape, _const(produced))])
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["m.safetensors"]


@pytest.mark.parametrize(
    "entries",
    [
        [("x", "F32", (1,), _const(np.ones(1, np.float32)))] * 2,  # duplicate name
        [("__metadata__", "F32", (1,), _const(np.ones(1, np.float32)))],
        [("x", "F99", (1,), _const(np.ones(1, np.float32)))],
        [("x", "F32", (-1,), _const(np.ones(1, np.float32)))],
        [("x", "F32", (1.5,), _const(np.ones(1, np.float32)))],
        [("x", "F32", (1,))],
    ],
)
def test_writer_rejects_bad_entries(tmp_path, entries):
    with pytest.raises(ValueError):
        write_safetensors(tmp_path / "m.safetensors", entries)
    assert os.listdir(tmp_path) == []


def test_writer_unwritable_output(tmp_path):
    with pytest.raises(InputError, match="cannot write"):
        write_safetensors(tmp_path / "missing" / "m.safetensors", [])


# --- cross-checks with the reference implementation ------------------------------------------


@pytest.mark.parametrize("np_dtype, st", [(np.float32, "F32"), (np.float16, "F16"), (np.float64, "F64"),
                                          (np.int64, "I64"), (np.int32, "I32"), (np.int16, "I16"),
                                          (np.int8, "I8"), (np.uint8, "U8"), (np.bool_, "BOOL")])
def test_reference_writer_our_reader(tmp_path, np_dtype, st):
    rng = np.random.default_rng(3)
    tensors = {}
    for i, shape in enumerate(SHAPES):
        if np_dtype == np.bool_:
            tensors[f"w.{i}"] = np.asarray(rng.integers(0, 2, size=shape), dtype=np.bool_)
        else:
            tensors[f"w.{i}"] = np.asarray(rng.standard_normal(shape) * 50).astype(np_dtype)
    path = str(tmp_path / "ref.safetensors")
    save_file(tensors, path, metadata={"format": "np", "k": "v"})
    with SafetensorsSource.open(path) as src:
        assert src.names == sorted(tensors)
        assert src.metadata == {"format": "np", "k": "v"}
        for k, a in tensors.items():
            assert src.info(k).dtype == st
            got = src.read(k)
            assert got.dtype == a.dtype and got.shape == a.shape
            assert np.array_equal(got, a)
            if np_dtype in (np.float32, np.float16, np.float64):
                assert np.array_equal(src.read_float32(k), a.astype(np.float32))
            else:
                with pytest.raises(SafetensorsError, match="not a floating-point type"):
                    src.read_float32(k)


@pytest.mark.parametrize("np_dtype, st", [(np.float32, "F32"), (np.float16, "F16")])
def test_our_writer_reference_reader(tmp_path, np_dtype, st):
    rng = np.random.default_rng(5)
    tensors = {f"layer.{i}": np.asarray(rng.standard_normal(shape)).astype(np_dtype) for i, shape in enumerate(SHAPES)}
    path = tmp_path / "ours.safetensors"
    write_safetensors(path, [(k, st, a.shape, _const(a)) for k, a in tensors.items()], metadata={"a": "b"})
    with safetensors.safe_open(str(path), framework="numpy") as f:
        assert sorted(f.keys()) == sorted(tensors)
        assert f.metadata() == {"a": "b"}
        for k, a in tensors.items():
            got = f.get_tensor(k)
            assert got.dtype == a.dtype and got.shape == a.shape
            assert np.array_equal(got, a)


def test_our_bf16_writer_reference_reader(tmp_path):
    rng = np.random.default_rng(6)
    tensors = {f"b.{i}": _random(shape, "bfloat16", rng) for i, shape in enumerate(SHAPES)}
    path = tmp_path / "bf16.safetensors"
    write_safetensors(path, [(k, "BF16", a.shape, _const(a)) for k, a in tensors.items()])
    # the reference (numpy framework) cannot build bf16 arrays: check its parsed header and the raw bytes
    with safetensors.safe_open(str(path), framework="numpy") as f:
        assert sorted(f.keys()) == sorted(tensors)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    for k, a in tensors.items():
        h = header[k]
        assert h["dtype"] == "BF16" and tuple(h["shape"]) == a.shape
        b, e = h["data_offsets"]
        assert raw[8 + n + b : 8 + n + e] == a.astype("<u2").tobytes()


def test_reference_bf16_bytes_our_reader(tmp_path):
    # a BF16 file laid out like the reference writer's output (sorted, contiguous, padded)
    vals = np.array([1.0, -2.5, 3.140625, 0.0], dtype=np.float32)
    bits = dtypes.f32_to_bf16_bits(vals)
    header = {"w": _entry("BF16", (2, 2), (0, 8))}
    path = _raw_file(tmp_path / "bf.safetensors", header, bits.astype("<u2").tobytes())
    with SafetensorsSource.open(path) as src:
        assert src.read("w").dtype == np.uint16
        assert np.array_equal(src.read_float32("w"), vals.reshape(2, 2))


# --- sharded models ---------------------------------------------------------------------------


def _write_sharded(directory, with_index=True, index_name="model.safetensors.index.json"):
    rng = np.random.default_rng(9)
    shard1 = {"a.weight": rng.standard_normal((4, 3)).astype(np.float32),
              "b.weight": rng.standard_normal((2,)).astype(np.float32)}
    shard2 = {"c.weight": rng.standard_normal((3, 3)).astype(np.float32)}
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    for fname, tensors, meta in zip(names, (shard1, shard2), ({"format": "pt"}, {"format": "pt", "extra": "2"})):
        write_safetensors(os.path.join(directory, fname),
                          [(k, "F32", a.shape, _const(a)) for k, a in tensors.items()], metadata=meta)
    if with_index:
        index = {"metadata": {"total_size": 100},
                 "weight_map": {**{k: names[0] for k in shard1}, **{k: names[1] for k in shard2}}}
        with open(os.path.join(directory, index_name), "w") as fh:
            json.dump(index, fh)
    return {**shard1, **shard2}, names


@pytest.mark.parametrize("via", ["dir", "index", "dir_no_index", "dir_other_index"])
def test_sharded(tmp_path, via):
    index_name = "other.safetensors.index.json" if via == "dir_other_index" else "model.safetensors.index.json"
    tensors, names = _write_sharded(tmp_path, with_index=via != "dir_no_index", index_name=index_name)
    path = tmp_path / index_name if via == "index" else tmp_path
    with SafetensorsSource.open(path) as src:
        assert src.names == sorted(tensors)
        assert src.metadata == {"format": "pt", "extra": "2"}
        assert sorted(os.path.basename(s) for s in src.shards) == names
        assert os.path.basename(src.info("c.weight").path) == names[1]
        for k, a in tensors.items():
            assert np.array_equal(src.read(k), a)
        if via != "dir_no_index":
            assert src.index_metadata == {"total_size": 100}


def test_directory_ignores_hidden_and_temp_files(tmp_path):
    a = np.ones(2, np.float32)
    write_safetensors(tmp_path / "one.safetensors", [("x", "F32", (2,), _const(a))])
    (tmp_path / ".hidden.safetensors").write_bytes(b"garbage")
    (tmp_path / ".one.safetensors.abcd.tmp").write_bytes(b"garbage")
    (tmp_path / "README.md").write_text("hi")
    with SafetensorsSource.open(tmp_path) as src:
        assert src.names == ["x"]


def test_index_tensor_in_shard_but_not_in_index_is_kept(tmp_path):
    tensors, names = _write_sharded(tmp_path)
    index_path = tmp_path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    del index["weight_map"]["b.weight"]
    index_path.write_text(json.dumps(index))
    with SafetensorsSource.open(tmp_path) as src:
        assert src.names == sorted(tensors)


# --- lazy mapping and lifetime ------------------------------------------------------------------


def test_read_is_a_view_of_the_map(tmp_path):
    a = np.arange(1000, dtype=np.float32)
    path = tmp_path / "m.safetensors"
    write_safetensors(path, [("x", "F32", a.shape, _const(a))])
    src = SafetensorsSource.open(path)
    got = src.read("x")
    assert got.base is not None and not got.flags.owndata
    with pytest.raises(ValueError):
        got[0] = 1
    f = src.read_float32("x")
    f[0] = 7  # a copy, writable
    src.close()
    assert np.array_equal(got, a)  # still valid after close
    with pytest.raises(ValueError):
        src.read("x")


def test_unknown_tensor_name(tmp_path):
    path = tmp_path / "m.safetensors"
    write_safetensors(path, [("x", "F32", (1,), _const(np.ones(1, np.float32)))])
    with SafetensorsSource.open(path) as src:
        assert "x" in src and "y" not in src
        with pytest.raises(SafetensorsError, match="no tensor named 'y'"):
            src.info("y")
        with pytest.raises(SafetensorsError, match="m.safetensors"):
            src.read("y")


def test_zero_size_tensors_at_end_of_file(tmp_path):
    # zero-size tensors may sit at offset == data length, even with an empty data buffer
    header = {"e1": _entry("F32", (0, 4), (0, 0)), "e2": _entry("BF16", (3, 0), (0, 0))}
    path = _raw_file(tmp_path / "z.safetensors", header)
    with SafetensorsSource.open(path) as src:
        assert src.read("e1").shape == (0, 4) and src.read("e1").dtype == np.float32
        assert src.read("e2").shape == (3, 0) and src.read("e2").dtype == np.uint16
        assert src.read_float32("e2").shape == (3, 0)
        assert src.info("e1").numel == 0 and src.info("e1").nbytes == 0


def test_unpadded_unaligned_header(tmp_path):
    # readers must not assume alignment of the data start
    a = np.arange(3, dtype=np.float32)
    path = _raw_file(tmp_path / "u.safetensors", {"x": _entry("F32", (3,), (0, 12))}, a.tobytes(), pad=False)
    with SafetensorsSource.open(path) as src:
        assert np.array_equal(src.read("x"), a)


# --- invalid files: each raises SafetensorsError naming the file --------------------------------

F8 = np.arange(2, dtype=np.float32).tobytes()  # 8 bytes of data

INVALID_HEADERS = {
    "not_an_object": ([1, 2, 3], F8, "not an object"),
    "entry_not_object": ({"x": [1]}, F8, "'x'.*not an object"),
    "missing_dtype": ({"x": {"shape": [2], "data_offsets": [0, 8]}}, F8, "'x'.*no 'dtype'"),
    "missing_shape": ({"x": {"dtype": "F32", "data_offsets": [0, 8]}}, F8, "'x'.*no 'shape'"),
    "missing_offsets": ({"x": {"dtype": "F32", "shape": [2]}}, F8, "'x'.*no 'data_offsets'"),
    "dtype_not_string": ({"x": _entry(dtype=4)}, F8, "'x'.*dtype"),
    "unknown_dtype": ({"x": _entry(dtype="F99")}, F8, "'x'.*unknown or unsupported dtype 'F99'"),
    "shape_not_list": ({"x": {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}}, F8, "'x'.*shape"),
    "negative_shape": ({"x": _entry(shape=(-2,))}, F8, "'x'.*shape"),
    "float_shape": ({"x": _entry(shape=(2.0,))}, F8, "'x'.*shape"),
    "bool_shape": ({"x": _entry(shape=(True, 2))}, F8, "'x'.*shape"),
    "string_shape": ({"x": _entry(shape=("2",))}, F8, "'x'.*shape"),
    "offsets_wrong_length": ({"x": _entry(offsets=(0, 4, 8))}, F8, "'x'.*data_offsets"),
    "offsets_not_ints": ({"x": _entry(offsets=(0, 8.0))}, F8, "'x'.*data_offsets"),
    "offsets_not_list": ({"x": {"dtype": "F32", "shape": [2], "data_offsets": "0-8"}}, F8, "'x'.*data_offsets"),
    "offsets_reversed": ({"x": _entry(offsets=(8, 0))}, F8, "'x'.*data_offsets"),
    "offsets_negative": ({"x": _entry(offsets=(-8, 0))}, F8, "'x'.*data_offsets"),
    "offsets_size_mismatch": ({"x": _entry(shape=(3,), offsets=(0, 8))}, F8, "'x'.*needs 12"),
    "offsets_out_of_range": ({"x": _entry(offsets=(8, 16))}, F8 * 1, "'x'.*past the end"),
    "overlap": ({"x": _entry(offsets=(0, 8)), "y": _entry(shape=(1,), offsets=(4, 8))}, F8,
                "overlaps"),
    "overlap_same": ({"x": _entry(offsets=(0, 8)), "y": _entry(offsets=(0, 8))}, F8 * 2, "overlaps"),
    "gap": ({"x": _entry(shape=(1,), offsets=(4, 8))}, F8, "gap"),
    "trailing_bytes": ({"x": _entry(offsets=(0, 8))}, F8 * 2, "not covered"),
    "metadata_not_object": ({"__metadata__": ["a"], "x": _entry()}, F8, "__metadata__"),
    "metadata_not_strings": ({"__metadata__": {"a": 1}, "x": _entry()}, F8, "__metadata__"),
}


@pytest.mark.parametrize("case", sorted(INVALID_HEADERS))
def test_invalid_header(tmp_path, case):
    header, data, pattern = INVALID_HEADERS[case]
    path = _raw_file(tmp_path / f"{case}.safetensors", header, data)
    with pytest.raises(SafetensorsError, match=pattern) as exc:
        SafetensorsSource.open(path)
    msg = str(exc.value)
    assert msg.startswith(path + ": ")
    assert "\n" not in msg


def test_lenient_mode_accepts_gaps_not_overlaps(tmp_path):
    path = _raw_file(tmp_path / "gap.safetensors", {"x": _entry(shape=(1,), offsets=(4, 8))}, F8 + b"xx")
    with SafetensorsSource.open(path, strict=False) as src:
        assert src.read("x")[0] == 1.0
    path = _raw_file(tmp_path / "ov.safetensors",
                     {"x": _entry(offsets=(0, 8)), "y": _entry(shape=(1,), offsets=(4, 8))}, F8)
    with pytest.raises(SafetensorsError, match="overlaps"):
        SafetensorsSource.open(path, strict=False)


@pytest.mark.parametrize(
    "case, raw, pattern",
    [
        ("empty", b"", "too short"),
        ("short", b"\x01\x00\x00", "too short"),
        ("header_past_end", struct.pack("<Q", 100) + b"{}", "runs past the end"),
        ("header_too_big", struct.pack("<Q", MAX_HEADER_SIZE + 1) + b"{}", "exceeds the limit"),
        ("header_huge", b"\xff" * 8 + b"{}", "exceeds the limit"),
        ("header_not_utf8", struct.pack("<Q", 4) + b"\xff\xfe{}", "not valid UTF-8"),
        ("header_not_json", struct.pack("<Q", 8) + b"{not js}", "not valid JSON"),
        ("header_empty", struct.pack("<Q", 0), "not valid JSON"),
        ("header_truncated_json", struct.pack("<Q", 8) + b'{"x": {', "runs past the end|not valid JSON"),
        ("header_nan", struct.pack("<Q", 16) + b'{"x": NaN}      ', "not valid JSON"),
        ("duplicate_key", struct.pack("<Q", 16) + b'{"a":{}, "a":{}}', "twice"),
        ("deep_nesting", struct.pack("<Q", 200000) + b"[" * 100000 + b"]" * 100000, "nested too deeply|not an object"),
    ],
)
def test_invalid_raw_file(tmp_path, case, raw, pattern):
    path = tmp_path / f"{case}.safetensors"
    path.write_bytes(raw)
    with pytest.raises(SafetensorsError, match=pattern) as exc:
        SafetensorsSource.open(path)
    assert str(exc.value).startswith(str(path) + ": ")
    assert "\n" not in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file: .*nope.safetensors") as exc:
        SafetensorsSource.open(tmp_path / "nope.safetensors")
    assert not isinstance(exc.value, SafetensorsError)


def test_directory_without_safetensors(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"")
    with pytest.raises(SafetensorsError, match="no .safetensors files") as exc:
        SafetensorsSource.open(tmp_path)
    assert str(tmp_path) in str(exc.value)


def test_duplicate_names_across_shards(tmp_path):
    a = np.ones(2, np.float32)
    write_safetensors(tmp_path / "s1.safetensors", [("x", "F32", (2,), _const(a))])
    write_safetensors(tmp_path / "s2.safetensors", [("x", "F32", (2,), _const(a))])
    with pytest.raises(SafetensorsError, match=r"s2\.safetensors: tensor 'x' is also in .*s1\.safetensors"):
        SafetensorsSource.open(tmp_path)


def test_index_missing_shard(tmp_path):
    _write_sharded(tmp_path)
    os.remove(tmp_path / "model-00002-of-00002.safetensors")
    with pytest.raises(SafetensorsError, match=r"index\.json: shard .*00002-of-00002\.safetensors.*does not exist"):
        SafetensorsSource.open(tmp_path)


def test_index_tensor_absent_from_shard(tmp_path):
    _write_sharded(tmp_path)
    index_path = tmp_path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["ghost.weight"] = "model-00001-of-00002.safetensors"
    index["weight_map"]["c.weight"] = "model-00001-of-00002.safetensors"  # wrong shard
    index_path.write_text(json.dumps(index))
    with pytest.raises(SafetensorsError, match=r"index\.json: tensor '(ghost|c)\.weight' is not in its shard"):
        SafetensorsSource.open(index_path)


@pytest.mark.parametrize(
    "content, pattern",
    [
        ("not json", "not valid JSON"),
        ("[]", "not an object"),
        ('{"metadata": {}}', "no 'weight_map'"),
        ('{"weight_map": []}', "'weight_map' is not an object"),
        ('{"weight_map": {"a": 3}}', "not a file name"),
        ('{"weight_map": {}, "metadata": 5}', "'metadata' is not an object"),
    ],
)
def test_invalid_index(tmp_path, content, pattern):
    _write_sharded(tmp_path, with_index=False)
    index_path = tmp_path / "model.safetensors.index.json"
    index_path.write_text(content)
    with pytest.raises(SafetensorsError, match=pattern) as exc:
        SafetensorsSource.open(tmp_path)
    assert str(exc.value).startswith(str(index_path) + ": ")


def test_invalid_shard_in_directory_names_the_shard(tmp_path):
    _write_sharded(tmp_path, with_index=False)
    (tmp_path / "zz.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(SafetensorsError, match=r"zz\.safetensors: .*too short"):
        SafetensorsSource.open(tmp_path)


def test_file_is_a_directory_path(tmp_path):
    (tmp_path / "d.safetensors").mkdir()
    (tmp_path / "d.safetensors" / "x.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(SafetensorsError, match="too short"):
        SafetensorsSource.open(tmp_path / "d.safetensors")
