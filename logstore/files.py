"""File names and file-system primitives; the only module that formats or parses a file name.

A segment is named by its base offset as a 20-digit zero-padded decimal (so ``ls`` sorts them
numerically), with the suffixes ``.log``, ``.index`` and ``.timeindex``. Temporary states append
a second suffix: ``.cleaned``, ``.swap``, ``.deleted`` (``00000000000000000000.log.deleted``).

Durability primitives: a file's data is durable after ``os.fsync`` of the file; its *name*
(creation, rename, unlink) is durable only after an fsync of the directory that holds it.
"""

from __future__ import annotations

import os
import re

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
