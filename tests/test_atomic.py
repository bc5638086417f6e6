"""atomic_output writes all or nothing; check_writable fails early for unwritable outputs."""

import os
import stat

import pytest

from pvqcodec.atomic import atomic_output, check_writable
from pvqcodec.errors import InputError


def _leftovers(directory):
    return sorted(n for n in os.listdir(directory) if n.endswith(".tmp"))


def test_success(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_output(target) as fh:
        fh.write(b"hello ")
        fh.write(b"world")
        # nothing at the target until the block ends
        assert not target.exists()
        assert len(_leftovers(tmp_path)) == 1
        assert _leftovers(tmp_path)[0].startswith(".out.bin.")
    assert target.read_bytes() == b"hello world"
    assert _leftovers(tmp_path) == []


def test_mode_like_plain_open(tmp_path):
    target = tmp_path / "out.bin"
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"")
    with atomic_output(target) as fh:
        fh.write(b"x")
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_replaces_existing(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with atomic_output(str(target)) as fh:
        fh.write(b"new")
    assert target.read_bytes() == b"new"
    assert _leftovers(tmp_path) == []


class Boom(Exception):
    pass


def test_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(Boom):
        with atomic_output(target) as fh:
            fh.write(b"partial")
            raise Boom()
    assert not target.exists()
    assert os.listdir(tmp_path) == []


def test_failure_keeps_existing(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"precious")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target) as fh:
            fh.write(b"partial")
            raise KeyboardInterrupt()
    assert target.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_missing_directory(tmp_path):
    target = tmp_path / "no" / "such" / "dir" / "out.bin"
    with pytest.raises(InputError, match=r"^cannot write .*out\.bin: .*does not exist"):
        check_writable(target)
    with pytest.raises(InputError, match="cannot write"):
        with atomic_output(target) as fh:  # pragma: no cover - never entered
            fh.write(b"x")
    assert not (tmp_path / "no").exists()


def test_parent_is_a_file(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(InputError, match="cannot write"):
        check_writable(tmp_path / "file" / "out.bin")


def test_target_is_a_directory(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        check_writable(tmp_path / "d")


def test_not_a_file_name(tmp_path):
    with pytest.raises(InputError, match="not a file name"):
        check_writable("")
    with pytest.raises(InputError, match="not a file name"):
        check_writable(str(tmp_path / "newdir") + os.sep)


def test_check_writable_ok_leaves_nothing(tmp_path):
    check_writable(tmp_path / "out.bin")
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write read-only dirs")
def test_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(InputError, match=r"cannot write .*out\.bin: "):
            check_writable(ro / "out.bin")
        with pytest.raises(InputError, match="cannot write"):
            with atomic_output(ro / "out.bin") as fh:  # pragma: no cover
                fh.write(b"x")
    finally:
        ro.chmod(0o755)
    assert os.listdir(ro) == []
