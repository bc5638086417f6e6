"""The encoder's payload coding choice (--entropy auto|rans|none), version_minor, and the
CLI's reporting of codings: files differ only in their payload codings, never in values."""

import json

import numpy as np
import pytest

from pvqcodec.api import PvqcFile
from pvqcodec.cli import main
from pvqcodec.coding import Bounds, RawCoding, StreamSpec
from pvqcodec.coding.rans import RansCoding
from pvqcodec.coding.select import code_stream
from pvqcodec.container.reader import Container

from helpers import write_weights

SHAPES = [("a.weight", (64, 256), "F32"), ("b.weight", (32, 96), "BF16"), ("norm.weight", (96,), "F16")]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("entropy")
    src = d / "in.safetensors"
    write_weights(src, SHAPES, seed=4)
    out = {}
    for codec in ("pvq", "lattice", "trellis"):
        for entropy in ("none", "auto", "rans"):
            path = d / f"{codec}-{entropy}.pvqc"
            assert main(["encode", str(src), str(path), "--codec", codec, "--bits", "2", "--entropy", entropy,
                         "-q"]) == 0
            out[codec, entropy] = path
    return src, out


def codings(path):
    with Container.open(path) as c:
        return c.version, [p.coding for t in c.tensors for p in t.payloads]


@pytest.mark.parametrize("codec", ["pvq", "lattice", "trellis"])
def test_codings_change_bytes_not_values(files, codec):
    _, out = files
    with PvqcFile(out[codec, "none"]) as a, PvqcFile(out[codec, "auto"]) as b, PvqcFile(out[codec, "rans"]) as c:
        for n in a.names:
            x = a.decode(n)
            assert np.array_equal(x.view(np.uint32), b.decode(n).view(np.uint32))
            assert np.array_equal(x.view(np.uint32), c.decode(n).view(np.uint32))
    version, cods = codings(out[codec, "none"])
    assert version == (1, 0) and set(cods) == {0}
    version, cods = codings(out[codec, "rans"])
    assert version == (1, 1) and set(cods) == {1}
    version, cods = codings(out[codec, "auto"])
    assert version == ((1, 1) if 1 in cods else (1, 0))


@pytest.mark.parametrize("codec", ["pvq", "lattice", "trellis"])
def test_auto_keeps_rans_only_where_it_saves_one_percent(files, codec):
    _, out = files
    with PvqcFile(out[codec, "auto"]) as f:
        for n in f.names:
            for p in f.info(n)["payloads"]:
                if p["coding"] == 1:
                    assert p["bytes"] <= 0.99 * p["raw_bytes"], (n, p)
    assert out[codec, "auto"].stat().st_size <= out[codec, "none"].stat().st_size


def test_deterministic(files, tmp_path):
    src, out = files
    again = tmp_path / "again.pvqc"
    assert main(["encode", str(src), str(again), "--codec", "lattice", "--bits", "2", "--entropy", "auto", "-q"]) == 0
    assert again.read_bytes() == out["lattice", "auto"].read_bytes()


def test_code_stream_policy():
    rng = np.random.default_rng(0)
    skewed = np.minimum(rng.geometric(0.5, 20000) - 1, 15).astype(np.uint8)
    spec = StreamSpec("s", skewed.size, 4)
    assert code_stream(skewed, spec, "auto").coding == RansCoding.id
    assert code_stream(skewed, spec, "none").coding == RawCoding.id
    flat = rng.integers(0, 16, 20000).astype(np.uint8)  # incompressible: raw under auto, rans under rans
    assert code_stream(flat, StreamSpec("s", flat.size, 4), "auto").coding == RawCoding.id
    forced = code_stream(flat, StreamSpec("s", flat.size, 4), "rans")
    assert forced.coding == RansCoding.id and forced.raw_bytes == flat.size // 2
    # A bounded stream: uniform mode spends log2 N, not the width (here 6 percent less).
    N = 2**60 + 7
    vals = np.array([int(v) % N for v in rng.integers(0, 2**63, 20000)], np.uint64)
    bspec = StreamSpec("s", vals.size, 64, Bounds((N,), None))
    c = code_stream(vals, bspec, "auto")
    assert c.coding == RansCoding.id and c.mode == "uniform"
    assert c.payload.size < 0.95 * c.raw_bytes
    with pytest.raises(ValueError):
        code_stream(flat, StreamSpec("s", flat.size, 4), "maybe")


def test_cli_info_and_summary(files, tmp_path, capsys):
    src, out = files
    assert main(["encode", str(src), str(tmp_path / "s.pvqc"), "--codec", "lattice", "--bits", "2"]) == 0
    summary = capsys.readouterr().out
    assert "raw bits/w" in summary and "before entropy coding" in summary
    assert main(["info", str(out["lattice", "rans"])]) == 0
    text = capsys.readouterr().out
    assert "patterns:" in text and "rans (" in text and "% of raw" in text
    assert main(["info", str(out["pvq", "rans"]), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    shapes = [p for t in doc["tensors"] if t["name"] == "a.weight" for p in t["payloads"] if p["stream"] == "shapes"]
    assert shapes[0]["coding_name"] == "rans" and shapes[0]["mode"] == "uniform" and shapes[0]["raw_bytes"] > 0


def test_cli_rejects_unknown_entropy(files, tmp_path, capsys):
    src, _ = files
    with pytest.raises(SystemExit) as exc:
        main(["encode", str(src), str(tmp_path / "x.pvqc"), "--entropy", "zstd"])
    assert exc.value.code == 2
    assert not (tmp_path / "x.pvqc").exists()
