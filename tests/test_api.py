"""The Python API: pvqcodec.open lists tensors lazily, decodes on demand, verifies."""

import numpy as np
import pytest

import pvqcodec
from pvqcodec.cli import main
from pvqcodec.errors import InputError

from helpers import write_weights


@pytest.fixture(scope="module")
def pvqc(tmp_path_factory):
    d = tmp_path_factory.mktemp("api")
    arrays = write_weights(d / "w.safetensors")
    assert main(["encode", str(d / "w.safetensors"), str(d / "w.pvqc"), "-q"]) == 0
    return d / "w.pvqc", arrays


def test_open_list_info_decode(pvqc):
    path, arrays = pvqc
    with pvqcodec.open(path) as f:
        assert f.version == (1, 0)
        assert f.names == sorted(arrays)
        assert "a.weight" in f and "nope" not in f
        info = f.info("a.weight")
        assert info["shape"] == [576, 1536] and info["codec"]["name"] == "pvq"
        assert info["transform"]["name"] == "rht" and info["bits_per_weight"] <= 2.0
        w = f.decode("a.weight")
        assert w.dtype == np.float32 and w.shape == (576, 1536)
        assert np.array_equal(f.decode("norm.weight"), arrays["norm.weight"])
        assert f.decode_stored("bias16").tobytes() == arrays["bias16"].tobytes()
        assert f.metadata["producer"].startswith("pvqcodec")
        with pytest.raises(InputError, match="nope"):
            f.decode("nope")


def test_verify_reports_damaged_tensor_by_name(pvqc, tmp_path):
    path, _ = pvqc
    data = bytearray(path.read_bytes())
    with pvqcodec.open(path) as f:
        assert f.verify() == []
        off = f.container.tensor("e3.weight").payloads[2].offset
    data[off] ^= 0x55
    bad = tmp_path / "bad.pvqc"
    bad.write_bytes(bytes(data))
    with pvqcodec.open(bad) as f:
        problems = f.verify(decode=False)
    assert [(n, c) for n, c, _ in problems] == [("e3.weight", "checksum_mismatch")]
