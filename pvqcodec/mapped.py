"""Opening a .pvqc file as a read-only memory map, with the user-facing errors."""

import mmap
import os

from .errors import FileTruncated, InputError


def map_file(path):
    """(open file, read-only mmap) of a non-empty file; InputError or FileTruncated otherwise.
    The caller closes both (the map first)."""
    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory, not a .pvqc file") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    if os.fstat(f.fileno()).st_size == 0:
        f.close()
        raise FileTruncated(f"{path}: file is empty")
    return f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def close_map(f, mm) -> None:
    try:
        mm.close()
    except BufferError:  # views still alive (e.g. a failed parse's traceback): freed with them
        pass
    f.close()
