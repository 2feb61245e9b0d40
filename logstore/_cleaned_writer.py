"""The cleaner's writing side: batches rebuilt from their kept records, and one segment group's
``<base>.log.cleaned`` with its two ``.cleaned`` indexes.

A rebuilt batch keeps its codec, base offset, last offset delta, producer fields and leader
epoch. When it keeps a tombstone for the first time it gets a *delete horizon* (KIP-534):
attribute bit 6 set and base_timestamp = the horizon, every record's timestamp delta re-based on
it so that each record keeps its timestamp. Kept apart from :mod:`logstore.cleaner` because this
is batch assembly and segment file output (the only part of a pass that writes segment files),
not deciding what survives.
"""

from __future__ import annotations

import os
import struct

import crc32c
import numpy as np

from ._record_layout import Records
from ._varint import varint_bytes
from .batch import (
    CODEC_MASK,
    CRC_OFFSET,
    CRC_START,
    DELETE_HORIZON_FLAG,
    HEADER,
    HEADER_SIZE,
    LOG_APPEND_TIME_FLAG,
    LOG_OVERHEAD,
    MAGIC,
    BatchHeader,
)
from .compression import compress
from .files import CLEANED_SUFFIX, INDEX_SUFFIX, LOG_SUFFIX, TIMEINDEX_SUFFIX, segment_path
from .index import OffsetIndex, TimeIndex

__all__ = ["CleanedWriter", "empty_batch", "rebuilt_batch", "remove_cleaned"]

_MIN_BATCH_LENGTH = HEADER_SIZE - LOG_OVERHEAD
_CRC = struct.Struct(">I")
_IOV_MAX = 1024


# --- batches out --------------------------------------------------------------------------------


def rebuilt_batch(header: BatchHeader, records: Records, rows: np.ndarray, new_horizon: int | None) -> bytes:
    """``header``'s batch holding only the records ``rows``, with a delete horizon if given."""
    attributes = header.attributes
    base_timestamp = header.base_timestamp
    if new_horizon is None:
        data = _gather(records, rows)
    else:
        data = _rebased(records, rows, base_timestamp, new_horizon)
        attributes |= DELETE_HORIZON_FLAG
        base_timestamp = new_horizon
    if attributes & LOG_APPEND_TIME_FLAG:
        max_timestamp = header.max_timestamp
    else:
        max_timestamp = _wrap64(header.base_timestamp + int(records.timestamp_deltas[rows].max()))
    return _assemble(header, data, count=len(rows), attributes=attributes, base_timestamp=base_timestamp,
                     max_timestamp=max_timestamp)


def _wrap64(value: int) -> int:
    return (value + 2**63) % 2**64 - 2**63


def _gather(records: Records, rows: np.ndarray) -> bytes:
    """The bytes of the records ``rows`` (ascending), each run of neighbours cut as one slice."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    begin = records.starts[rows[np.concatenate(([0], breaks))]].tolist()
    finish = records.ends[rows[np.concatenate((breaks - 1, [len(rows) - 1]))]].tolist()
    buffer = records.buffer
    return b"".join([buffer[a:b] for a, b in zip(begin, finish, strict=True)])


def _rebased(records: Records, rows: np.ndarray, old_base: int, new_base: int) -> bytes:
    """The records ``rows`` with their timestamp deltas moved from base ``old_base`` to
    ``new_base`` (each record keeps its timestamp); every other byte of a record is copied."""
    parts = []
    buffer = records.buffer
    for i in rows.tolist():
        attributes_at = int(records.attributes_at[i])
        body = b"".join((
            buffer[attributes_at : attributes_at + 1],
            varint_bytes(_wrap64(old_base + int(records.timestamp_deltas[i]) - new_base)),
            varint_bytes(int(records.offset_deltas[i])),
            buffer[int(records.rest_at[i]) : int(records.ends[i])],
        ))
        parts.append(varint_bytes(len(body)))
        parts.append(body)
    return b"".join(parts)


def _assemble(header: BatchHeader, records: bytes, *, count: int, attributes: int, base_timestamp: int,
              max_timestamp: int) -> bytes:
    """A batch with ``header``'s offsets, producer fields and leader epoch around ``records``
    (compressed with the codec in ``attributes``, default level); the CRC is computed here."""
    codec = attributes & CODEC_MASK
    body = compress(codec, records) if codec and count else records
    if not count:
        attributes &= ~CODEC_MASK
    fields = header._replace(
        batch_length=_MIN_BATCH_LENGTH + len(body),
        magic=MAGIC,
        crc=0,
        attributes=attributes,
        base_timestamp=base_timestamp,
        max_timestamp=max_timestamp,
        records_count=count,
    )
    packed = HEADER.pack(*fields)
    crc = crc32c.crc32c(body, crc32c.crc32c(memoryview(packed)[CRC_START:]))
    return b"".join((packed[:CRC_OFFSET], _CRC.pack(crc), packed[CRC_START:], body))


def empty_batch(header: BatchHeader) -> bytes:
    """``header``'s batch with no records (no codec, no horizon): it keeps the batch's offset
    range, and so the segment's last offset, after every record of it was cleaned away."""
    attributes = header.attributes & ~(CODEC_MASK | DELETE_HORIZON_FLAG)
    return _assemble(header, b"", count=0, attributes=attributes, base_timestamp=header.max_timestamp,
                     max_timestamp=header.max_timestamp)


# --- the group's files -------------------------------------------------------------------------


class CleanedWriter:
    """Writes one ``<base>.log.cleaned`` and its two ``.cleaned`` indexes, with the index rule of
    :meth:`Segment.append` (an entry before a batch once more than ``index_interval_bytes`` were
    written since the last one). Pieces are buffered and written with ``writev``."""

    def __init__(self, directory: str, base_offset: int, config, buffer_bytes: int):
        self.base_offset = base_offset
        self._buffer_bytes = buffer_bytes
        self.paths = [segment_path(directory, base_offset, s) + CLEANED_SUFFIX
                      for s in (LOG_SUFFIX, INDEX_SUFFIX, TIMEINDEX_SUFFIX)]
        for path in self.paths:
            if os.path.exists(path):
                os.unlink(path)
        self._fd = os.open(self.paths[0], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._offset_index = OffsetIndex(self.paths[1], base_offset, max_index_bytes=config.segment_index_bytes)
        self._time_index = TimeIndex(self.paths[2], base_offset, max_index_bytes=config.segment_index_bytes)
        self._interval = config.index_interval_bytes
        self.position = 0
        self._since = 0
        self._max_ts = (-1, base_offset)
        self._pieces: list = []
        self._pending = 0
        self._run: tuple[memoryview, int, int] | None = None  # neighbouring copied batches

    def add(self, header: BatchHeader, data=None, view: memoryview | None = None, at: int = 0) -> None:
        """Append one batch: ``data`` (bytes), or the bytes at ``view[at : at + header.size]``."""
        size = header.size if data is None else len(data)
        if header.max_timestamp > self._max_ts[0]:  # (before the entry, as Kafka)
            self._max_ts = (header.max_timestamp, header.last_offset)
        if self._since > self._interval and not (self._offset_index.is_full or self._time_index.is_full):
            self._offset_index.append(header.last_offset, self.position)
            self._time_index.append(*self._max_ts)
            self._since = 0
        self._since += size
        self.position += size
        if data is None:
            run = self._run
            if run is not None and run[0] is view and run[2] == at:
                self._run = (view, run[1], at + size)
                return
            self._end_run()
            self._run = (view, at, at + size)
            return
        self._end_run()
        self._push(data)

    def _end_run(self) -> None:
        if self._run is not None:
            view, start, end = self._run
            self._run = None
            self._push(view[start:end])

    def _push(self, piece) -> None:
        self._pieces.append(piece)
        self._pending += len(piece)
        if self._pending >= self._buffer_bytes or len(self._pieces) >= _IOV_MAX:
            self.flush()

    def flush(self) -> None:
        """Write everything buffered (before the views it refers to are reused)."""
        self._end_run()
        pieces = self._pieces
        while pieces:
            chunk = pieces[:_IOV_MAX]
            written = os.writev(self._fd, chunk)
            done = 0
            while done < len(chunk) and written >= len(chunk[done]):
                written -= len(chunk[done])
                done += 1
            del pieces[:done]
            if written:
                pieces[0] = memoryview(pieces[0])[written:]
        self._pending = 0

    def finish(self, mtime_ns: int) -> None:
        """Flush, write the final time entry, trim the indexes, copy ``mtime_ns``, fsync all."""
        self.flush()
        if self._max_ts[0] >= 0:
            self._time_index.append(*self._max_ts, final=True)
        for index in (self._offset_index, self._time_index):
            index.trim()
            index.flush()
            index.close()
        os.utime(self._fd, ns=(mtime_ns, mtime_ns))
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1

    def abort(self) -> None:
        for index in (self._offset_index, self._time_index):
            index.close(trim=False)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        for path in self.paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def remove_cleaned(directory: str, bases: list[int]) -> None:
    """Delete the ``.cleaned`` files of the groups ``bases`` (those that exist)."""
    for base in bases:
        for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIMEINDEX_SUFFIX):
            try:
                os.unlink(segment_path(directory, base, suffix) + CLEANED_SUFFIX)
            except FileNotFoundError:
                pass

