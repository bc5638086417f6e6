"""The Python API: open a .pvqc file lazily, list tensors, decode one on demand."""

from .codecs import codec_by_id
from .coding import RawCoding, coding_by_id
from .coding.rans import MODES as _RANS_MODES, RansCoding
from .container.reader import Container
from .decoder import decode_float32, decode_stored
from .errors import FormatError
from .transforms import transform_by_id


class PvqcFile:
    """A .pvqc file opened for reading. Payloads are memory-mapped; nothing is decoded
    until asked for. Use as a context manager or call close()."""

    def __init__(self, path):
        self._c = Container.open(path)
        self.path = self._c.path

    @property
    def version(self) -> tuple:
        return self._c.version

    @property
    def metadata(self) -> dict:
        return dict(self._c.metadata)

    @property
    def names(self) -> list:
        return self._c.names

    def __contains__(self, name) -> bool:
        return name in self._c.names

    def info(self, name: str) -> dict:
        """Everything the directory says about one tensor, as plain JSON-able values."""
        rec = self._c.tensor(name)
        return tensor_info(rec, self._c)

    def decode(self, name: str, decoder: str = "python"):
        """The tensor as float32 (exactly the spec's decoded values). decoder="c" uses the
        C reference decoder (pvqcodec.cdecoder); both give the same bits."""
        if _use_c(decoder):
            return self._cdecoder().decode(name)
        return decode_float32(self._c, self._c.tensor(name))

    def decode_stored(self, name: str, dtype: str = None, decoder: str = "python"):
        """The tensor in a storage dtype (raw tensors bit-identical; bfloat16 as uint16 bits)."""
        if _use_c(decoder):
            return self._cdecoder().decode_stored(name, dtype)
        return decode_stored(self._c, self._c.tensor(name), dtype)

    def _cdecoder(self):
        """The C decoder over the same memory map (opened on first use)."""
        if getattr(self, "_cdec", None) is None:
            from .cdecoder import CDecoder

            self._cdec = CDecoder(self._c._buf, path=self.path)
        return self._cdec

    def verify(self, decode: bool = True, decoder: str = "python") -> list:
        """Check every payload's CRC (and decode it unless decode=False).
        Returns a list of (tensor name, error code, message); empty means the file is sound.
        With decoder="c", decode=False still checks the payloads' contents (cheap)."""
        problems = []
        for rec in self._c.tensors:
            try:
                if _use_c(decoder):
                    self._cdecoder().check(rec.name)
                    if decode:
                        self._cdecoder().decode(rec.name)
                elif decode:
                    decode_float32(self._c, rec)
                else:
                    for i in range(len(rec.payloads)):
                        self._c.payload(rec, i)
            except FormatError as exc:
                problems.append((rec.name, exc.code, str(exc)))
        return problems

    @property
    def container(self) -> Container:
        return self._c

    def close(self):
        if getattr(self, "_cdec", None) is not None:
            self._cdec.close()
            self._cdec = None
        self._c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


RANS_MODE_NAMES = {v: k for k, v in _RANS_MODES.items()}


def _use_c(decoder: str) -> bool:
    if decoder not in ("python", "c"):
        raise ValueError(f"decoder must be 'python' or 'c', got {decoder!r}")
    return decoder == "c"


def payload_info(rec, i: int, container=None) -> dict:
    """One payload's directory entry, its coding by name, and the size the raw coding
    would take (for rans payloads, the mode from the payload's first byte when the
    container is given; no CRC check)."""
    p = rec.payloads[i]
    coding = coding_by_id(p.coding)
    out = {"stream": p.stream.name, "coding": p.coding, "coding_name": coding.name, "offset": p.offset,
           "bytes": p.length, "raw_bytes": RawCoding.expected_length(p.stream), "symbols": p.stream.count,
           "width": p.stream.width, "crc32": f"{p.crc:08x}"}
    if coding is RansCoding and container is not None and p.length:
        out["mode"] = RANS_MODE_NAMES.get(int(container.payload(rec, i, verify=False)[0]), "invalid")
    return out


def tensor_info(rec, container=None) -> dict:
    codec = codec_by_id(rec.codec_id)
    coded_bits = 8 * rec.coded_bytes
    return {
        "name": rec.name,
        "dtype": rec.dtype,
        "shape": list(rec.shape),
        "matrix": [rec.rows, rec.cols],
        "transform": transform_by_id(rec.transform_id).describe(rec.transform_params),
        "codec": codec.describe(rec.codec_params),
        "payloads": [payload_info(rec, i, container) for i in range(len(rec.payloads))],
        "params_bytes": rec.params_size,
        "bits_per_weight": (coded_bits / rec.numel) if rec.numel else 0.0,
    }


def open(path) -> PvqcFile:  # noqa: A001 - the natural name, as in pvqcodec.open(path)
    return PvqcFile(path)
