"""Write an output file all at once or not at all.

`atomic_output(path)` writes into a temporary file next to the target
(``.NAME.XXXXXXXX.tmp``) and renames it into place only when the writer finishes
without an exception; on failure the temporary file is removed and an existing file
at ``path`` is left untouched. `check_writable(path)` lets a command find out that an
output cannot be written before it starts hours of work.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import BinaryIO, Iterator

from .errors import InputError

__all__ = ["atomic_output", "check_writable"]


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _cannot_write(path, reason: str) -> InputError:
    return InputError(f"cannot write {os.fspath(path)}: {reason}")


def _split(path) -> tuple[str, str]:
    p = os.fspath(path)
    if isinstance(p, bytes):
        p = os.fsdecode(p)
    absolute = os.path.abspath(p)
    return os.path.dirname(absolute), os.path.basename(absolute)


def check_writable(path) -> None:
    """Raise InputError ("cannot write PATH: reason") unless a file can be created at ``path``.

    Checks that the directory exists and is a directory, that ``path`` is not itself a
    directory, and that a file can really be created in the directory (by creating and
    removing a temporary file, so it also works for root and read-only mounts).
    """
    p = os.fsdecode(os.fspath(path))
    if not p or p.endswith(os.sep) or (os.altsep and p.endswith(os.altsep)):
        raise _cannot_write(path, "not a file name")
    directory, base = _split(path)
    if not os.path.exists(directory):
        raise _cannot_write(path, f"directory {directory} does not exist")
    if not os.path.isdir(directory):
        raise _cannot_write(path, f"{directory} is not a directory")
    if os.path.isdir(path):
        raise _cannot_write(path, "is a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise _cannot_write(path, _reason(exc)) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def _new_file_mode(path: str) -> int:
    """The permission bits a plain open(path, "wb") would give: the old file's, or 0o666 & ~umask."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        pass
    umask = None
    try:  # Linux >= 4.7: read the umask without changing it (thread-safe)
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    umask = int(line.split()[1], 8)
                    break
    except (OSError, ValueError, IndexError):
        pass
    if umask is None:
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_output(path) -> Iterator[BinaryIO]:
    """Context manager yielding a binary file; its content appears at ``path`` only on success.

    On normal exit the file is flushed, fsynced and renamed over ``path`` (os.replace),
    then the directory is fsynced (best effort). On any exception (KeyboardInterrupt
    included) the temporary file is removed and the exception re-raised. Failures of
    the setup, flush or rename raise InputError("cannot write PATH: reason").
    """
    check_writable(path)
    target = os.fsdecode(os.fspath(path))
    directory, base = _split(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise _cannot_write(path, _reason(exc)) from None
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, _new_file_mode(target))
        with os.fdopen(fd, "wb") as fh:
            yield fh
            try:
                fh.flush()
                os.fsync(fh.fileno())
            except OSError as exc:
                raise _cannot_write(path, _reason(exc)) from exc
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise _cannot_write(path, _reason(exc)) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError, AttributeError):
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
