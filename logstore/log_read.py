"""Reading a log: by offset (records or columns), as a zero-copy slice, by timestamp.

Part of :class:`logstore.log.Log`, kept in its own module because reading is its own concept
(the writer's lock is never taken here). Reads take a snapshot of the segment list and see only
whole batches below ``log_end_offset``; a batch whose CRC fails raises
:class:`~logstore.errors.CorruptBatchError` naming the file and position.
"""

from __future__ import annotations

import bisect
from typing import NamedTuple

import numpy as np

from . import batch as batch_format
from .batch import Record
from .errors import OffsetOutOfRangeError
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
        for segment, data, at, header, first, stop in self._read_batches(offset, max_bytes, max_offset):
            decoded = batch_format.decode(data, at, path=segment.log_path)
            if first or stop < header.last_offset + 1:
                decoded = [r for r in decoded if offset <= r.offset < stop]
            records.extend(decoded)
        return records

    def read_columns(
        self, offset: int, *, max_bytes: int = 1024 * 1024, max_offset: int | None = None
    ) -> batch_format.RecordColumns:
        """Like :meth:`read`, but column by column (offsets and timestamps as numpy int64 arrays,
        keys, values and headers as lists): the fast path for bulk consumers."""
        offsets, timestamps, keys, values, headers = [], [], [], [], []
        for segment, data, at, header, first, stop in self._read_batches(offset, max_bytes, max_offset):
            columns = batch_format.decode_columns(data, at, path=segment.log_path)
            if first or stop < header.last_offset + 1:
                keep = (columns.offsets >= offset) & (columns.offsets < stop)
                picked = np.flatnonzero(keep).tolist()
                columns = batch_format.RecordColumns(
                    columns.offsets[keep],
                    columns.timestamps_ms[keep],
                    [columns.keys[i] for i in picked],
                    [columns.values[i] for i in picked],
                    [columns.headers[i] for i in picked],
                )
            offsets.append(columns.offsets)
            timestamps.append(columns.timestamps_ms)
            keys.extend(columns.keys)
            values.extend(columns.values)
            headers.extend(columns.headers)
        if not offsets:
            empty = np.empty(0, dtype=np.int64)
            return batch_format.RecordColumns(empty, empty.copy(), [], [], [])
        return batch_format.RecordColumns(np.concatenate(offsets), np.concatenate(timestamps), keys, values, headers)

    def _read_batches(self, offset: int, max_bytes: int, max_offset: int | None):
        """Yield ``(segment, data, position in data, header, is_first, stop)`` for each batch to
        decode; ``stop`` is the offset (exclusive) reads must not reach."""
        self._check_open()
        stop = self.log_end_offset if max_offset is None else min(max_offset, self.log_end_offset)
        self._check_range(offset, self.log_end_offset)
        first = True
        for segment, position, size in self._read_plan(offset, max_bytes, stop):
            data = segment.read(position, size)
            at = 0
            while at < size:
                header = batch_format.unpack_header(data, at, path=segment.log_path)
                yield segment, data, at, header, first, stop
                first = False
                at += header.size

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
            for _batch_position, batch_header in segment.iter_headers(position, segment.size):
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
        size = first_header.size
        for _batch_position, header in segment.iter_headers(position + size, segment.size):
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
        columns = batch_format.decode_columns(segment.read(position, header.size), path=segment.log_path)
        timestamps = columns.timestamps_ms
        hits = (timestamps == target) if exact else (timestamps >= target)
        hits &= columns.offsets >= start
        i = int(np.argmax(hits))
        if not hits[i]:
            return None
        return OffsetAndTimestamp(int(columns.offsets[i]), int(timestamps[i]))
