"""File names and file-system primitives; the only module that formats or parses a file name.

A segment is named by its base offset as a 20-digit zero-padded decimal (so ``ls`` sorts them
numerically), with the suffixes ``.log``, ``.index`` and ``.timeindex``. Temporary states append
a second suffix: ``.cleaned``, ``.swap``, ``.deleted`` (``00000000000000000000.log.deleted``).

Durability primitives: a file's data is durable after ``os.fsync`` of the file; its *name*
(creation, rename, unlink) is durable only after an fsync of the directory that holds it.

Block reservation (``reserve_blocks``): Linux's ``fallocate`` with ``FALLOC_FL_KEEP_SIZE``
allocates disk blocks past the end of a file without changing its size, so readers, ``stat``,
recovery and Kafka's tools see exactly the bytes written; writes into reserved blocks skip the
file system's per-page block reservation (about 5-10% more MB/s for sequential appends on
ext4). ``release_reserved_blocks`` frees what was not used (``ftruncate`` to the current size).
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import sys

__all__ = [
    "LOG_SUFFIX",
    "INDEX_SUFFIX",
    "TIMEINDEX_SUFFIX",
    "CLEANED_SUFFIX",
    "SWAP_SUFFIX",
    "DELETED_SUFFIX",
    "TMP_SUFFIX",
    "CLEANER_CHECKPOINT_NAME",
    "segment_prefix",
    "segment_path",
    "parse_segment_name",
    "fsync_dir",
    "write_atomically",
    "reserve_blocks",
    "release_reserved_blocks",
]

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIMEINDEX_SUFFIX = ".timeindex"
CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"
DELETED_SUFFIX = ".deleted"
TMP_SUFFIX = ".tmp"
#: the cleaner's per-log progress file (first dirty offset); deleting it is always safe
CLEANER_CHECKPOINT_NAME = "cleaner-offset-checkpoint"

_NAME = re.compile(r"^(\d{20})(\.log|\.index|\.timeindex)((?:\.cleaned|\.swap|\.deleted)?)$")


def segment_prefix(base_offset: int) -> str:
    """``"00000000000000000042"`` for 42."""
    if base_offset < 0:
        raise ValueError(f"base_offset must be >= 0, got {base_offset}")
    return f"{base_offset:020d}"


def segment_path(directory: str, base_offset: int, suffix: str) -> str:
    return os.path.join(directory, segment_prefix(base_offset) + suffix)


def parse_segment_name(name: str) -> tuple[int, str, str] | None:
    """``(base_offset, suffix, state_suffix)`` for a segment file name, ``None`` for other files.

    ``state_suffix`` is ``""`` for a live file or one of ``.cleaned``/``.swap``/``.deleted``.
    """
    match = _NAME.match(name)
    if match is None:
        return None
    return int(match.group(1)), match.group(2), match.group(3)


def fsync_dir(directory: str) -> None:
    """Make creations, renames and unlinks inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new content.

    Writes ``path.tmp``, fsyncs it, renames it over ``path`` and fsyncs the directory.
    A leftover ``.tmp`` from a crash is harmless and is overwritten by the next call.
    """
    tmp = path + TMP_SUFFIX
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


_FALLOC_FL_KEEP_SIZE = 0x01  # linux/falloc.h


def _load_fallocate():
    """libc's ``fallocate(int fd, int mode, off_t offset, off_t len)``, or None (not Linux/glibc)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    function.restype = ctypes.c_int
    return function


_fallocate = _load_fallocate()


def reserve_blocks(fd: int, position: int, length: int) -> bool:
    """Allocate disk blocks for bytes ``[position, position + length)`` of ``fd`` without changing
    its size (see the module docstring). Returns False where that is not possible: not Linux, a
    file system without ``fallocate`` (EOPNOTSUPP), no space left (ENOSPC: the write that follows
    reports the real error, if any) or any other refusal; the caller stops reserving and writes as
    if it never had. Raises only ``ValueError`` for a negative range."""
    if position < 0 or length <= 0:
        raise ValueError(f"cannot reserve {length} bytes at position {position}")
    if _fallocate is None:
        return False
    if _fallocate(fd, _FALLOC_FL_KEEP_SIZE, position, length) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.EBADF:
        raise OSError(err, os.strerror(err))
    return False


def release_reserved_blocks(fd: int, size: int) -> None:
    """Free the blocks reserved past ``size`` (the file's size): ``ftruncate`` to the same size
    drops every block beyond it and leaves the bytes below untouched."""
    os.ftruncate(fd, size)
