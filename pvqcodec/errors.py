"""The one set of errors pvqcodec raises for bad input or bad files.

Every error a user can cause is a subclass of `PvqcodecError`; the CLI prints
its message on one line and exits non-zero. Each format error carries a stable
`code` (snake_case) that the spec's rejection list, the C decoder and the
conformance suite's invalid vectors use to name the same condition.
Anything else that escapes is a bug in pvqcodec.
"""


class PvqcodecError(Exception):
    """Base class: a user-facing error with a one-line message."""

    code = "error"


# --- bad input: files, options, weights -------------------------------------------------


class InputError(PvqcodecError):
    """A user mistake: a missing file, a bad option, an unsupported tensor."""

    code = "input_error"


class SafetensorsError(InputError):
    """An input file that is not a valid safetensors file (or sharded set)."""

    code = "safetensors_invalid"


# --- bad .pvqc files (spec section 9, "Rejection conditions") ----------------------------


class FormatError(PvqcodecError):
    """A .pvqc file that violates the spec: a decoder must reject it."""

    code = "format_error"


class MagicInvalid(FormatError):
    """The file does not start with the .pvqc magic bytes."""

    code = "magic_invalid"


class VersionUnsupported(FormatError):
    """The file's major version is newer than this reader's."""

    code = "version_unsupported"


class FileTruncated(FormatError):
    """The file is shorter than its header says, or a structure runs past its end."""

    code = "file_truncated"


class FileSizeMismatch(FormatError):
    """The file is longer than its header says (trailing bytes)."""

    code = "file_size_mismatch"


class HeaderCorrupt(FormatError):
    """The header block cannot be parsed, breaks a rule, or leaves bytes unread."""

    code = "header_corrupt"


class ReservedNonZero(FormatError):
    """A reserved field or flag bit is not zero."""

    code = "reserved_nonzero"


class LimitExceeded(FormatError):
    """A size or count exceeds a limit of the spec (section 8)."""

    code = "limit_exceeded"


class ChecksumMismatch(FormatError):
    """A CRC-32 does not match the bytes it covers."""

    code = "checksum_mismatch"


class CodecUnknown(FormatError):
    """A tensor names a codec id this reader does not know."""

    code = "codec_unknown"


class CodingUnknown(FormatError):
    """A payload names a coding id this reader does not know."""

    code = "coding_unknown"


class TransformUnknown(FormatError):
    """A tensor names a transform id this reader does not know."""

    code = "transform_unknown"


class ParamsInvalid(FormatError):
    """A codec's or transform's parameters are out of their allowed ranges."""

    code = "params_invalid"


class PayloadLayoutInvalid(FormatError):
    """A payload's offset or length breaks the layout rules (alignment, order, size)."""

    code = "payload_layout_invalid"


class PayloadCorrupt(FormatError):
    """A payload's content is impossible (e.g. a PVQ index >= N(D, K), a non-finite table value)."""

    code = "payload_corrupt"


def all_format_errors():
    """Every FormatError subclass, keyed by code (the conformance suite's error names)."""
    out = {}
    stack = [FormatError]
    while stack:
        cls = stack.pop()
        out[cls.code] = cls
        stack.extend(cls.__subclasses__())
    return out
