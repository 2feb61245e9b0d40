"""Offline, read-only access to one segment's files: the tools' common ground.

What it owns: the type of a segment file from its name (:func:`classify`, :func:`matching_log`),
opening an index without creating or mapping it (:func:`open_index`), and walking a ``.log``'s
batches front to back through a buffered file (:class:`LogScanner`), which yields every whole
batch -- a bad CRC included -- and says where and why the readable batches end (:class:`LogTail`).

Why it is separate: ``logstore dump`` (:mod:`logstore.dump`) and ``logstore verify``
(:mod:`logstore.verify`) both read segments this way but print different things; this module
prints nothing. Like them it opens every file ``"rb"`` and imports neither :mod:`logstore.log` nor
:mod:`logstore.store`, so it works on a directory that ``Log`` would refuse to open (a torn tail,
a bad CRC, an index with a zero tail). The batch format itself is :mod:`logstore.batch`'s.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import NamedTuple

from .batch import HEADER_SIZE, BatchHeader, unpack_header, validate
from .errors import CorruptBatchError
from .files import INDEX_SUFFIX, LOG_SUFFIX, TIMEINDEX_SUFFIX, parse_segment_name

__all__ = ["ScannedBatch", "LogTail", "LogScanner", "classify", "matching_log", "open_index"]

_STATE_SUFFIXES = (".cleaned", ".swap", ".deleted")
_KINDS = {LOG_SUFFIX: "log", INDEX_SUFFIX: "index", TIMEINDEX_SUFFIX: "timeindex"}
_READ_BUFFER_BYTES = 1024 * 1024


# --- reading a .log -----------------------------------------------------------------------------


class ScannedBatch(NamedTuple):
    """One batch found by :class:`LogScanner`: fully present, header readable, magic 2."""

    position: int
    header: BatchHeader
    data: bytes | None  # the whole batch, when the scanner keeps data
    crc_error: str | None  # None when the CRC matches (or was not checked)


class LogTail(NamedTuple):
    """Where the readable batches of a ``.log`` end; ``invalid_bytes`` is 0 for a clean end."""

    position: int
    invalid_bytes: int
    reason: str | None


class LogScanner:
    """Walk the batches of a ``.log`` front to back, read-only, through a buffered file.

    A batch whose CRC does not match is still yielded (``crc_error`` says why) and the walk goes
    on after it, because its length field, outside the CRC, may well be right. The walk stops at
    the first thing that is not a batch: fewer than 61 bytes left, a length below the minimum, a
    magic other than 2, or a batch running past the end (a torn write). After iterating,
    :attr:`tail` tells where and why.

    ``limit`` stops at that many bytes (``--max-bytes``); ``keep_data=False`` skips the batch
    bodies (a header-only walk, no CRC); ``progress`` is called with the bytes passed.
    """

    def __init__(
        self,
        path: str,
        *,
        limit: int | None = None,
        keep_data: bool = True,
        progress: Callable[[int], None] | None = None,
    ):
        self.path = path
        self.limit = limit
        self.keep_data = keep_data
        self.progress = progress
        self.tail: LogTail | None = None
        self.file_size: int | None = None

    def __iter__(self) -> Iterator[ScannedBatch]:
        with open(self.path, "rb", buffering=_READ_BUFFER_BYTES) as file:
            size = os.fstat(file.fileno()).st_size
            self.file_size = size
            end = size if self.limit is None else min(size, self.limit)
            position = 0
            while position < end:
                left = end - position
                if left < HEADER_SIZE:
                    self._stop(position, end, f"{left} bytes are too few for a {HEADER_SIZE}-byte batch header")
                    return
                head = file.read(HEADER_SIZE)
                try:
                    header = unpack_header(head)
                except CorruptBatchError as error:
                    self._stop(position, end, f"no batch starts here ({_without_position(error)})")
                    return
                if position + header.size > end:
                    if position + header.size > size:
                        why = f"a batch of {header.size} bytes runs past the end of the file (a torn write)"
                    else:
                        why = f"a batch of {header.size} bytes runs past --max-bytes {end}"
                    self._stop(position, end, why)
                    return
                body_size = header.size - HEADER_SIZE
                if self.keep_data:
                    data = head + file.read(body_size)
                    try:
                        validate(data)
                        crc_error = None
                    except CorruptBatchError as error:
                        crc_error = _without_position(error)
                else:
                    file.seek(body_size, os.SEEK_CUR)
                    data = crc_error = None
                yield ScannedBatch(position, header, data, crc_error)
                position += header.size
                if self.progress is not None:
                    self.progress(header.size)
            self.tail = LogTail(position, 0, None)

    def _stop(self, position: int, end: int, reason: str) -> None:
        self.tail = LogTail(position, end - position, reason)
        if self.progress is not None:
            self.progress(end - position)


def _without_position(error: CorruptBatchError) -> str:
    """The error's message without the " at position 0" of a batch checked on its own bytes."""
    return str(error).removesuffix(" at position 0")


# --- file names ---------------------------------------------------------------------------------


def classify(path: str) -> tuple[str | None, int | None]:
    """``(kind, base_offset)``: kind is ``"log"``, ``"index"``, ``"timeindex"`` or ``None``.

    ``base_offset`` comes from the file name (``None`` if the name does not start with one).
    """
    name = os.path.basename(path)
    parsed = parse_segment_name(name)
    if parsed is not None:
        base_offset, suffix, _state = parsed
        return _KINDS[suffix], base_offset
    stem = name
    for state in _STATE_SUFFIXES:
        if stem.endswith(state):
            stem = stem[: -len(state)]
            break
    stem, suffix = os.path.splitext(stem)
    prefix = stem.split(".")[0]
    return _KINDS.get(suffix), int(prefix) if prefix.isdigit() else None


def matching_log(path: str) -> str:
    """The ``.log`` next to an index file: same name with ``.log`` for its type suffix."""
    state = next((s for s in _STATE_SUFFIXES if path.endswith(s)), "")
    stem = path[: len(path) - len(state)] if state else path
    return os.path.splitext(stem)[0] + LOG_SUFFIX + state


# --- indexes ------------------------------------------------------------------------------------


def open_index(cls, path: str, base_offset: int):
    """Open an existing index read-only (``cls`` is OffsetIndex or TimeIndex): the file is read
    with one ``np.fromfile``, never mapped or created; FileNotFoundError if it is missing."""
    if not os.path.exists(path):
        raise FileNotFoundError(2, "No such file or directory", path)
    return cls(path, base_offset, writable=False)
