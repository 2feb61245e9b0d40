"""Reading a log: by offset (records or columns), as a zero-copy slice, by timestamp.

Part of :class:`logstore.log.Log`, kept in its own module because reading is its own concept
(the writer's lock is never taken here). Reads take a snapshot of the segment list and see only
whole batches below ``log_end_offset``; a batch whose CRC fails raises
:class:`~logstore.errors.CorruptBatchError` naming the file and position.
"""

from __future__ import annotations

import bisect
from functools import partial
from typing import NamedTuple

import numpy as np

from . import batch as batch_format
from ._record_alike import decode_records_runs
from ._record_decode import RecordError
from .batch import BatchHeader, Record
from .errors import CorruptBatchError, OffsetOutOfRangeError
from .segment import FileSlice, Segment

__all__ = ["LogReads", "OffsetAndTimestamp", "LATEST", "EARLIEST", "MAX_TIMESTAMP"]

#: Special targets of :meth:`LogReads.offset_for_timestamp`, with Kafka's ListOffsets values.
LATEST = -1
EARLIEST = -2
MAX_TIMESTAMP = -3


class OffsetAndTimestamp(NamedTuple):
    offset: int
    timestamp_ms: int


class LogReads:
    """The read half of :class:`~logstore.log.Log` (a mixin: it uses the log's segment list)."""

    _segments: list[Segment]
    _bases: list[int]
    _log_start_offset: int

    def _bisect_segment(self, offset: int) -> int:
        return max(0, bisect.bisect_right(self._bases, offset) - 1)

    def _check_range(self, offset: int, end: int) -> None:
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise TypeError(f"offset must be an int, got {type(offset).__name__}")
        if offset < self._log_start_offset or offset > end:
            raise OffsetOutOfRangeError(offset, self._log_start_offset, end)

    def _locate(self, offset: int, max_offset: int):
        """(segments snapshot, index of segment, position, header) of the first batch holding an
        offset >= ``offset`` below ``max_offset``, or None."""
        segments = self._segments
        bases = self._bases
        i = max(0, bisect.bisect_right(bases, offset) - 1)
        while i < len(segments):
            segment = segments[i]
            if segment.base_offset >= max_offset:
                return None
            found = segment.find_batch(offset)
            if found is not None:
                if found[1].base_offset >= max_offset:
                    return None
                return segments, i, found[0], found[1]
            i += 1
        return None

    def read(self, offset: int, *, max_bytes: int = 1024 * 1024, max_offset: int | None = None) -> list[Record]:
        """Records from ``offset`` on, decoded, up to about ``max_bytes`` of batches (always at
        least one whole batch, even a larger one) and below ``max_offset`` (default: the end).

        ``offset == log_end_offset`` returns ``[]``. An offset below ``log_start_offset`` or above
        ``log_end_offset`` raises :class:`OffsetOutOfRangeError`. A batch that fails its CRC raises
        :class:`CorruptBatchError` naming the file and position.
        """
        records: list[Record] = []
        for offsets, timestamps, keys, values, headers in self._read_decoded(offset, max_bytes, max_offset):
            records += map(_new_record, zip(offsets.tolist(), timestamps.tolist(), keys, values, headers, strict=True))
        return records

    def read_columns(
        self, offset: int, *, max_bytes: int = 1024 * 1024, max_offset: int | None = None
    ) -> batch_format.RecordColumns:
        """Like :meth:`read`, but column by column (offsets and timestamps as numpy int64 arrays,
        keys, values and headers as lists): the fast path for bulk consumers."""
        chunks = self._read_decoded(offset, max_bytes, max_offset)
        if not chunks:
            empty = np.empty(0, dtype=np.int64)
            return batch_format.RecordColumns(empty, empty.copy(), [], [], [])
        return _concatenate(chunks)

    def _read_decoded(self, offset: int, max_bytes: int, max_offset: int | None) -> list[batch_format.RecordColumns]:
        """The records to return, as columns: one entry per range of the read plan (one read each).

        A range of uncompressed batches is decoded in one vectorised pass over all its records
        (:func:`_decode_range`); anything else, or anything that does not check out there (damage
        included), is decoded batch by batch, which raises the precise error.
        """
        self._check_open()
        stop = self.log_end_offset if max_offset is None else min(max_offset, self.log_end_offset)
        self._check_range(offset, self.log_end_offset)
        result = []
        first = True
        for segment, position, size in self._read_plan(offset, max_bytes, stop):
            data = segment.read(position, size)
            columns = _decode_range(data, size, first, offset, stop)
            if columns is None:
                columns = _decode_batches(data, size, first, offset, stop, segment.log_path)
            if columns is not None:
                result.append(columns)
            first = False
        return result

    def _read_plan(self, offset: int, max_bytes: int, end: int) -> list[tuple[Segment, int, int]]:
        """(segment, position, size) ranges of whole batches to read, across segments."""
        plan = []
        if offset >= end:
            return plan
        located = self._locate(offset, end)
        if located is None:
            return plan
        segments, i, position, header = located
        budget = max_bytes
        first = True
        while i < len(segments):
            segment = segments[i]
            size = 0
            # (header by header: a read plan needs no record bytes)
            for _at, batch_header in segment.iter_headers(position, segment.size, first_window=_HEADER_SIZE):
                if batch_header.base_offset >= end:
                    break
                if not first and size + batch_header.size > budget:
                    budget = 0
                    break
                size += batch_header.size
                first = False
            if size:
                plan.append((segment, position, size))
                budget -= size
            if budget <= 0 or i + 1 >= len(segments) or segments[i + 1].base_offset >= end:
                break
            i += 1
            position = 0
        return plan

    def read_slice(self, offset: int, *, max_bytes: int = 1024 * 1024, max_offset: int | None = None) -> FileSlice:
        """A zero-copy slice of one segment starting at the batch that contains ``offset``.

        Holds at most ``max_bytes`` of whole batches, but at least the first batch even if it is
        larger (Kafka's KIP-74); never reaches ``max_offset`` (default: the end). ``size == 0``
        when there is nothing to read. Out-of-range offsets raise :class:`OffsetOutOfRangeError`.
        """
        self._check_open()
        end = self.log_end_offset if max_offset is None else min(max_offset, self.log_end_offset)
        self._check_range(offset, self.log_end_offset)
        located = self._locate(offset, end) if offset < end else None
        if located is None:
            segment = self._segments[-1]
            return segment.slice(segment.size, 0)
        segments, i, position, first_header = located
        segment = segments[i]
        segment_end = segment.size
        size = first_header.size
        header = None
        if size < max_bytes:
            size, header = _jump_by_index(segment, position, size, min(position + max_bytes, segment_end), end)
        if size < max_bytes:
            if first_header.size >= 16 * 1024:  # big batches: one header read per batch
                header_at = segment.header_at
                if header is None:  # (the jump's target batch was read already)
                    header = header_at(position + size, segment_end)
                while header is not None:
                    if header.base_offset >= end or size + header.size > max_bytes:
                        break
                    size += header.size
                    header = header_at(position + size, segment_end)
            else:  # small ones: read windows of headers and records
                for _batch_position, header in segment.iter_headers(position + size, segment_end, first_window=4096):
                    if header.base_offset >= end or size + header.size > max_bytes:
                        break
                    size += header.size
        return segment.slice(position, size)

    def offset_for_timestamp(self, timestamp_ms: int) -> OffsetAndTimestamp | None:
        """Kafka's ListOffsets: the first offset whose record timestamp is >= ``timestamp_ms``.

        ``LATEST`` (-1) gives ``log_end_offset``, ``EARLIEST`` (-2) gives ``log_start_offset``
        (timestamp -1 for both), ``MAX_TIMESTAMP`` (-3) the offset of the record with the largest
        timestamp. Returns ``None`` when no record is that late (or the log is empty, for -3).
        Timestamps need not be monotonic: the answer is the first match in the first segment
        whose largest timestamp is >= the target, as in Kafka.
        """
        self._check_open()
        if timestamp_ms == LATEST:
            return OffsetAndTimestamp(self.log_end_offset, -1)
        if timestamp_ms == EARLIEST:
            return OffsetAndTimestamp(self._log_start_offset, -1)
        segments = self._segments
        start = self._log_start_offset
        if timestamp_ms == MAX_TIMESTAMP:
            best = None
            for segment in segments:
                ts, _offset = segment.max_timestamp
                if ts >= 0 and (best is None or ts > best[0]):
                    best = (ts, segment)
            if best is None:
                return None
            ts, segment = best
            found = segment.find_timestamp(ts, start)
            return self._record_at_timestamp(segment, found, ts, start, exact=True)
        if timestamp_ms < 0:
            raise ValueError(f"timestamp_ms must be >= 0 or LATEST/EARLIEST/MAX_TIMESTAMP, got {timestamp_ms}")
        for segment in segments:
            if segment.next_offset <= start or segment.max_timestamp[0] < timestamp_ms:
                continue
            found = segment.find_timestamp(timestamp_ms, start)
            result = self._record_at_timestamp(segment, found, timestamp_ms, start, exact=False)
            if result is not None:
                return result
        return None

    def _record_at_timestamp(self, segment, found, target, start, *, exact):
        if found is None:
            return None
        position, header = found
        data = segment.read(position, header.size)
        if not exact:  # the first record is often the answer: then no need to decode the others
            first = batch_format.first_record_time(data, path=segment.log_path)
            if first is not None and first[1] >= target and first[0] >= start:
                return OffsetAndTimestamp(*first)
        offsets, timestamps = batch_format.decode_offsets_and_timestamps(data, path=segment.log_path)
        hits = (timestamps == target) if exact else (timestamps >= target)
        hits &= offsets >= start
        i = int(np.argmax(hits))
        if not hits[i]:
            return None
        return OffsetAndTimestamp(int(offsets[i]), int(timestamps[i]))


_new_record = partial(tuple.__new__, Record)
_HEADER_UNPACK = batch_format.HEADER.unpack_from
_HEADER_SIZE = batch_format.HEADER_SIZE
_MIN_BATCH_LENGTH = batch_format.MIN_BATCH_LENGTH
_CODEC_MASK = batch_format.CODEC_MASK
_LOG_APPEND_TIME_FLAG = batch_format.LOG_APPEND_TIME_FLAG
_CRC_START = batch_format.CRC_START


def _select(columns: batch_format.RecordColumns, keep: np.ndarray) -> batch_format.RecordColumns:
    picked = np.flatnonzero(keep).tolist()
    return batch_format.RecordColumns(
        columns.offsets[keep],
        columns.timestamps_ms[keep],
        [columns.keys[i] for i in picked],
        [columns.values[i] for i in picked],
        [columns.headers[i] for i in picked],
    )


def _decode_batches(data: bytes, size: int, first: bool, offset: int, stop: int, path: str):
    """The batches of ``data[:size]`` decoded one by one (any codec), each checked (header, CRC,
    records) and filtered to ``offset <= o < stop`` where needed; None if there are none."""
    parts = []
    at = 0
    while at < size:
        header = batch_format.unpack_header(data, at, path=path)
        columns = batch_format.decode_columns(data, at, path=path)
        if first or stop < header.last_offset + 1:
            columns = _select(columns, (columns.offsets >= offset) & (columns.offsets < stop))
        parts.append(columns)
        first = False
        at += header.size
    return _concatenate(parts) if parts else None


def _concatenate(parts: list[batch_format.RecordColumns]) -> batch_format.RecordColumns:
    """One RecordColumns of several, in order (the single one as it is)."""
    if len(parts) == 1:
        return parts[0]
    keys, values, headers = [], [], []
    for columns in parts:
        keys += columns.keys
        values += columns.values
        headers += columns.headers
    return batch_format.RecordColumns(
        np.concatenate([c.offsets for c in parts]),
        np.concatenate([c.timestamps_ms for c in parts]),
        keys,
        values,
        headers,
    )


def _decode_range(data: bytes, size: int, first: bool, offset: int, stop: int):
    """The records of all batches in ``data[:size]`` decoded together, when every batch is
    uncompressed and checks out (header, CRC, record framing); None otherwise, so that the caller
    decodes batch by batch and reports what is wrong exactly as :func:`batch.decode_columns` does.
    Filters to ``offset <= o < stop`` the batches :func:`_decode_batches` would filter."""
    if type(data) is not bytes:
        return None
    view = memoryview(data)
    crc32c = batch_format.crc32c_oneshot
    unpack = _HEADER_UNPACK
    regions = []
    bases = []
    base_timestamps = []
    max_timestamps = []
    append_time = False
    filtered = []  # indexes into regions of batches to filter
    at = 0
    while at < size:
        if size - at < _HEADER_SIZE:
            return None
        (base_offset, batch_length, _epoch, magic, crc, attributes, last_delta, base_ts, max_ts, _pid, _pe, _seq,
         count) = unpack(data, at)
        end = at + 12 + batch_length
        if magic != batch_format.MAGIC or batch_length < _MIN_BATCH_LENGTH or end > size:
            return None
        if attributes & _CODEC_MASK or crc32c(view[at + _CRC_START : end]) != crc:
            return None
        if first or stop < base_offset + last_delta + 1:
            filtered.append(len(regions) if count else -1)
        first = False
        if count:
            regions.append((at + _HEADER_SIZE, end, count))
            bases.append(base_offset)
            base_timestamps.append(base_ts)
            if attributes & _LOG_APPEND_TIME_FLAG:
                append_time = True
                max_timestamps.append(max_ts)
            else:
                max_timestamps.append(None)
        elif count < 0 or end != at + _HEADER_SIZE:
            return None
        at = end
    if not regions:
        return None  # (empty batches only: rare, left to the batch-by-batch path)
    try:
        off_delta, ts_delta, keys, values, headers = decode_records_runs(data, regions)
    except (RecordError, ValueError, IndexError, UnicodeDecodeError, OverflowError):
        return None
    counts = np.fromiter((r[2] for r in regions), np.int64, len(regions))
    if len(regions) == 1:
        offsets = off_delta + np.int64(bases[0])
        with np.errstate(over="ignore"):
            timestamps = ts_delta + np.int64(base_timestamps[0])
    else:
        offsets = off_delta + np.repeat(np.array(bases, np.int64), counts)
        with np.errstate(over="ignore"):
            timestamps = ts_delta + np.repeat(np.array(base_timestamps, np.int64), counts)
    if append_time:
        bounds = np.cumsum(counts).tolist()
        for k, ts in enumerate(max_timestamps):
            if ts is not None:
                timestamps[bounds[k] - counts[k] : bounds[k]] = ts
    columns = batch_format.RecordColumns(offsets, timestamps, keys, values, headers)
    if filtered:
        bounds = np.cumsum(counts).tolist()
        keep = None
        for k in filtered:
            if k < 0:
                continue
            a, b = bounds[k] - int(counts[k]), bounds[k]
            part = offsets[a:b]
            inside = (part >= offset) & (part < stop)
            if not inside.all():
                if keep is None:
                    keep = np.ones(len(offsets), dtype=bool)
                keep[a:b] = inside
        if keep is not None:
            columns = _select(columns, keep)
    return columns


def _jump_by_index(segment: Segment, position: int, size: int, limit: int, end: int) -> tuple[int, BatchHeader | None]:
    """``(size, header)``: the size of a slice from ``position`` (its first ``size`` bytes
    already taken) after a jump to the last indexed batch that starts at or before ``limit`` and
    ends below offset ``end`` -- every batch before that one is whole, below ``limit`` and below
    ``end``, so none of their headers need reading -- and the header of that batch (the next
    one to consider), or None where no jump was made. The header is checked against its index
    entry; when it does not match (a damaged index), no jump is made and the caller walks every
    header."""
    found = segment.offset_index.floor_within(end - 1, limit)
    if found is None or found[1] <= position + size:
        return size, None
    last_offset, at = found
    try:
        header = segment.header_at(at, segment.size)
    except CorruptBatchError:  # (the entry points into a batch)
        return size, None
    if header is None or header.last_offset != last_offset:
        return size, None
    return at - position, header
