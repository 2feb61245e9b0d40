"""A log: one partition directory of ordered segments.

Vocabulary: an *offset* numbers a record; a *position* is a byte in a ``.log``. ``log_start_offset``
is the first offset kept, ``log_end_offset`` the next offset to be assigned, ``durable_offset`` the
recovery point: every offset below it has been fsynced. The *active segment* (the last) takes the
appends; the others are sealed and never change except by truncation or deletion.

Guarantees (assuming fsync makes written data and directory entries durable, and a crash can
lose or tear only what was written after the last fsync):

* A record is durable once ``durable_offset`` is above its offset. With ``durability="append"``
  every append returns only then; appenders racing each other share one fsync (group commit).
* After any crash the reopened log is a prefix of the appends in order, at least up to the
  durable offset at the time of the crash; a torn or garbage tail is cut at the last valid batch.
* Damage below the recovery point is never returned as data: a decoded read verifies each batch's
  CRC and raises :class:`~logstore.errors.CorruptBatchError` naming the file and position.

Concurrency: appends, rolls and truncations take the log's writer lock; reads take no lock and see
only whole batches below ``log_end_offset``.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from . import batch as batch_format
from .batch import BatchHeader, Compression, Record
from .config import LogConfig
from .errors import (
    CorruptBatchError,
    LogClosedError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
)
from .files import fsync_dir
from .recovery import (
    Checkpoint,
    read_checkpoint,
    resolve_leftovers,
    segment_base_offsets,
    take_clean_shutdown_marker,
    write_checkpoint,
    write_clean_shutdown_marker,
)
from .retention import SegmentInfo
from .segment import FileSlice, Segment

__all__ = ["Log", "AppendInfo", "OffsetAndTimestamp", "LATEST", "EARLIEST", "MAX_TIMESTAMP"]

#: Special targets of :meth:`Log.offset_for_timestamp`, with Kafka's ListOffsets values.
LATEST = -1
EARLIEST = -2
MAX_TIMESTAMP = -3


class AppendInfo(NamedTuple):
    """Where an append went: offsets ``base_offset..last_offset`` and the largest timestamp."""

    base_offset: int
    last_offset: int
    max_timestamp_ms: int
    record_count: int


class OffsetAndTimestamp(NamedTuple):
    offset: int
    timestamp_ms: int


def _now_ms() -> int:
    return int(time.time() * 1000)


class Log:
    """One partition: ordered segments in ``directory`` (created if missing).

    ``Log(directory, config)`` opens the log, recovering after an unclean stop (see
    :mod:`logstore.recovery`). ``clock_ms`` (a callable returning milliseconds) replaces the wall
    clock for segment age and flush intervals. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, directory: str | os.PathLike, config: LogConfig | None = None, *, clock_ms=None):
        self.directory = os.fspath(directory)
        self.config = config if config is not None else LogConfig()
        if not isinstance(self.config, LogConfig):
            raise TypeError(f"config must be a LogConfig, got {type(self.config).__name__}")
        self._clock_ms = clock_ms or _now_ms
        self._lock = threading.RLock()
        self._sync_cond = threading.Condition(threading.Lock())
        self._syncing = False
        self._closed = False
        self._appended_cond = threading.Condition(threading.Lock())
        self._dir_dirty = False
        self._pending_deletes: list[tuple[int, Segment]] = []
        self.recovered_bytes_truncated = 0
        self.was_clean_shutdown = False
        os.makedirs(self.directory, exist_ok=True)
        self._load()

    # --- open and recovery ---------------------------------------------------------------------

    def _load(self) -> None:
        directory = self.directory
        clean = take_clean_shutdown_marker(directory)
        leftovers = resolve_leftovers(directory)
        checkpoint = read_checkpoint(directory)
        bases = segment_base_offsets(directory)
        config = self.config
        self.was_clean_shutdown = clean and not leftovers and checkpoint is not None
        if not bases:
            start = checkpoint.log_start_offset if checkpoint else 0
            segments = [Segment.create(directory, start, config)]
            fsync_dir(directory)
            self._segments = segments
            self._bases = [start]
            self._log_start_offset = start
            self._durable_offset = start
            self._flushed_segments = 0
            self._last_flush_ms = self._clock_ms()
            self._unflushed_messages = 0
            write_checkpoint(directory, Checkpoint(start, start))
            return
        segments = [Segment.open(directory, base, config, active=(i == len(bases) - 1)) for i, base in enumerate(bases)]
        truncated = 0
        if self.was_clean_shutdown and not segments[-1].load_active():
            # the active segment does not look like a clean close left it: re-validate it
            truncated += segments[-1].recover(max_batch_bytes=max(config.max_batch_bytes, config.segment_bytes))
            self.was_clean_shutdown = False
            recovery_point = min(checkpoint.recovery_point, segments[-1].next_offset)
        elif self.was_clean_shutdown:
            recovery_point = segments[-1].next_offset
        else:
            recover_from = checkpoint.recovery_point if checkpoint else 0
            # the segment containing the recovery point, and every later one, are re-validated
            first = max(0, bisect.bisect_right(bases, recover_from) - 1)
            keep = len(segments)
            for i in range(first, len(segments)):
                segment = segments[i]
                cut = segment.recover(
                    max_batch_bytes=max(config.max_batch_bytes, config.segment_bytes),
                    contiguous_from=recover_from if i == len(segments) - 1 else None,
                )
                truncated += cut
                if cut and i < len(segments) - 1:
                    keep = i + 1  # nothing after a damaged point survives (Kafka's rule)
                    break
                if i < len(segments) - 1:
                    segment.seal()
            for segment in segments[keep:]:
                segment.delete_files()
            segments = segments[:keep]
            recovery_point = min(recover_from, segments[-1].next_offset)
        self.recovered_bytes_truncated = truncated
        self._segments = segments
        self._bases = [s.base_offset for s in segments]
        log_start = segments[0].base_offset
        if checkpoint is not None:
            log_start = max(log_start, min(checkpoint.log_start_offset, segments[-1].next_offset))
        self._log_start_offset = log_start
        self._durable_offset = max(recovery_point, log_start)
        # what survived recovery may still be only in the page cache: durable is what the
        # checkpoint proved (Kafka's rule); the next flush covers the rest
        self._flushed_segments = self._bisect_segment(self._durable_offset)
        self._last_flush_ms = self._clock_ms()
        self._unflushed_messages = 0
        if truncated or leftovers:
            fsync_dir(directory)
        write_checkpoint(directory, Checkpoint(self._durable_offset, self._log_start_offset))

    # --- state ---------------------------------------------------------------------------------

    @property
    def segments(self) -> tuple[Segment, ...]:
        """A snapshot of the segments, oldest first; the last is the active segment."""
        return tuple(self._segments)

    @property
    def active_segment(self) -> Segment:
        return self._segments[-1]

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        """The offset the next appended record will get (0 for a new log)."""
        return self._segments[-1].next_offset

    @property
    def durable_offset(self) -> int:
        """Every offset below this one is fsynced (the recovery point)."""
        return self._durable_offset

    @property
    def high_watermark(self) -> int:
        """The last offset (exclusive) that readers such as the server's consumers are shown.

        With ``durability="append"`` it is ``durable_offset``: consumers never see a record a
        crash could still take back (appends are fsynced promptly, so it lags only by one group
        commit). In the other modes the user chose not to wait for the disk, and it is
        ``log_end_offset`` (otherwise consumers would wait up to ``flush_ms`` for every record).
        """
        if self.config.durability == "append":
            return min(self._durable_offset, self.log_end_offset)
        return self.log_end_offset

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"log {self.directory} is closed")

    # --- appending -----------------------------------------------------------------------------

    def append(
        self,
        values: Sequence[bytes | None],
        *,
        keys: Sequence[bytes | None] | None = None,
        headers: Sequence[Sequence[tuple[str, bytes | None]]] | None = None,
        timestamps_ms: int | Sequence[int] | None = None,
        compression: Compression | str | None = None,
    ) -> AppendInfo:
        """Append records as one batch; returns their offsets.

        ``values`` are bytes (``None`` = tombstone); ``keys``/``headers`` are optional and, when
        given, as long as ``values``; ``timestamps_ms`` is one int for all, one per record, or
        ``None`` for now; ``compression`` defaults to the config's. An empty ``values`` raises
        ``ValueError``; a batch larger than
        ``max_batch_bytes`` raises :class:`RecordTooLargeError` and nothing is written.
        """
        if compression is None:
            compression = self.config.compression
        if isinstance(compression, str):
            compression = Compression.from_name(compression)
        if timestamps_ms is None:
            timestamps_ms = self._clock_ms()
        # encoded outside the writer lock; only the base offset (outside the CRC) is set under it
        encoded = batch_format.encode(
            values, keys=keys, headers=headers, timestamps_ms=timestamps_ms, compression=compression
        )
        header = batch_format.unpack_header(encoded)
        if header.size > self.config.max_batch_bytes:
            raise RecordTooLargeError(
                f"batch of {header.size} bytes exceeds max_batch_bytes={self.config.max_batch_bytes}"
            )
        with self._lock:
            self._check_open()
            base_offset = self.log_end_offset
            info = self._append_validated(encoded, [(0, header._replace(base_offset=base_offset))])
        self._after_append(info)
        return info

    def append_records(self, records: Iterable, *, compression: Compression | str | None = None) -> AppendInfo:
        """Append records given as objects with ``value`` and optionally ``key``, ``headers`` and
        ``timestamp_ms`` attributes (a :class:`~logstore.batch.Record`, say); offsets are ignored."""
        values, keys, headers, timestamps = [], [], [], []
        now = self._clock_ms()
        for record in records:
            values.append(record.value)
            keys.append(getattr(record, "key", None))
            headers.append(tuple(getattr(record, "headers", ()) or ()))
            ts = getattr(record, "timestamp_ms", None)
            timestamps.append(now if ts is None or ts < 0 else ts)
        return self.append(
            values,
            keys=keys if any(k is not None for k in keys) else None,
            headers=headers if any(headers) else None,
            timestamps_ms=timestamps,
            compression=compression,
        )

    def append_batches(self, data: bytes | bytearray | memoryview) -> AppendInfo:
        """Append record batches already encoded (as a producer sends them) without decoding them.

        Each batch is checked (size, magic, CRC); its base offset is rewritten to the next offsets
        of this log (outside the CRC, so the batch stays valid). Anything invalid raises
        :class:`CorruptBatchError` and nothing is written; a batch over ``max_batch_bytes`` raises
        :class:`RecordTooLargeError`.
        """
        buf = memoryview(data).cast("B")
        if not buf:
            raise ValueError("no batches given")
        headers: list[tuple[int, BatchHeader]] = []
        position = 0
        while position < len(buf):
            if len(buf) - position < batch_format.HEADER_SIZE:
                raise CorruptBatchError(
                    f"{len(buf) - position} trailing bytes are not a whole batch", position=position
                )
            header = batch_format.validate(buf, position)
            if header.size > self.config.max_batch_bytes:
                raise RecordTooLargeError(
                    f"batch of {header.size} bytes exceeds max_batch_bytes={self.config.max_batch_bytes}"
                )
            headers.append((position, header))
            position += header.size
        with self._lock:
            self._check_open()
            next_offset = self.log_end_offset
            for i, (position, header) in enumerate(headers):
                headers[i] = (position, header._replace(base_offset=next_offset))
                next_offset += header.last_offset_delta + 1
            info = self._append_validated(buf, headers)
        self._after_append(info)
        return info

    def _append_validated(self, data, headers: list[tuple[int, BatchHeader]]) -> AppendInfo:
        """Write batches whose offsets are assigned (in ``headers``: the bytes in ``data`` still
        carry the producer's base offsets, replaced on the way to disk); the writer lock is held."""
        size = len(data)
        if size > self.config.max_batch_bytes and len(headers) == 1:
            raise RecordTooLargeError(
                f"batch of {size} bytes exceeds max_batch_bytes={self.config.max_batch_bytes}"
            )
        if size > self.config.segment_bytes:
            raise RecordTooLargeError(f"{size} bytes do not fit in a segment of {self.config.segment_bytes} bytes")
        first = headers[0][1]
        last = headers[-1][1]
        active = self._segments[-1]
        now_ms = self._clock_ms()
        if not active.can_append(first.base_offset, last.last_offset, size) or self._segment_too_old(active, now_ms):
            active = self._roll(first.base_offset)
        active.append(data, headers, now_ms)
        self._unflushed_messages += last.next_offset - first.base_offset
        max_ts = max(h.max_timestamp for _p, h in headers)
        return AppendInfo(first.base_offset, last.last_offset, max_ts, last.next_offset - first.base_offset)

    def _after_append(self, info: AppendInfo) -> None:
        with self._appended_cond:
            self._appended_cond.notify_all()
        mode = self.config.durability
        if mode == "append":
            self._sync_to(info.last_offset + 1)
        elif mode == "interval":
            self.maybe_flush()

    def wait_for_append(self, offset: int, timeout_s: float) -> bool:
        """Block until ``log_end_offset > offset`` or ``timeout_s`` passes; returns whether it did."""
        deadline = time.monotonic() + timeout_s
        with self._appended_cond:
            while self.log_end_offset <= offset and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._appended_cond.wait(remaining)
        return self.log_end_offset > offset

    # --- rolling -------------------------------------------------------------------------------

    def _segment_too_old(self, segment: Segment, now_ms: int) -> bool:
        base = segment.rolling_base_ms()
        return base is not None and now_ms - base > self.config.segment_ms

    def roll(self) -> Segment:
        """Seal the active segment and start a new one at ``log_end_offset`` (no-op when empty)."""
        with self._lock:
            self._check_open()
            if self._segments[-1].size == 0:
                return self._segments[-1]
            return self._roll(self.log_end_offset)

    def maybe_roll(self, now_ms: int | None = None) -> bool:
        """Roll the active segment if it is older than ``segment_ms`` (called by a timer too, so an
        idle log still rolls). Returns whether it rolled."""
        now_ms = self._clock_ms() if now_ms is None else now_ms
        with self._lock:
            if self._closed:
                return False
            active = self._segments[-1]
            if active.size and self._segment_too_old(active, now_ms):
                self._roll(self.log_end_offset)
                return True
        return False

    def _roll(self, base_offset: int) -> Segment:
        base_offset = max(base_offset, self.log_end_offset)
        old = self._segments[-1]
        if old.size == 0:
            # an empty active segment is replaced rather than left behind
            old.close()
            old.delete_files()
            segments = self._segments[:-1]
        else:
            old.seal()
            segments = list(self._segments)
        new = Segment.create(self.directory, base_offset, self.config)
        segments.append(new)
        self._segments = segments
        self._bases = [s.base_offset for s in segments]
        self._flushed_segments = min(self._flushed_segments, len(segments) - 1)
        self._dir_dirty = True
        return new

    # --- durability ----------------------------------------------------------------------------

    def sync(self) -> int:
        """fsync everything appended so far; returns the new ``durable_offset``."""
        return self._sync_to(self.log_end_offset)

    def maybe_flush(self, now_ms: int | None = None) -> bool:
        """In ``interval`` mode, fsync if ``flush_ms`` passed or ``flush_messages`` accumulated."""
        if self.config.durability != "interval" or self._closed:
            return False
        now_ms = self._clock_ms() if now_ms is None else now_ms
        due = now_ms - self._last_flush_ms >= self.config.flush_ms
        if self.config.flush_messages is not None:
            due = due or self._unflushed_messages >= self.config.flush_messages
        if due and self._durable_offset < self.log_end_offset:
            self._sync_to(self.log_end_offset)
            return True
        return False

    def _sync_to(self, target: int) -> int:
        """Group commit: make every offset below ``target`` durable. One thread fsyncs; others
        that arrive meanwhile wait and are usually covered by that same fsync."""
        with self._sync_cond:
            while self._durable_offset < target:
                if self._syncing:
                    self._sync_cond.wait()
                    continue
                self._syncing = True
                break
            else:
                return self._durable_offset
        new_durable = None
        try:
            with self._lock:
                if self._closed:  # close() synced everything
                    return self._durable_offset
                end = self.log_end_offset
                segments = self._segments[self._flushed_segments :]
                dir_dirty, self._dir_dirty = self._dir_dirty, False
                self._unflushed_messages = 0
                self._last_flush_ms = self._clock_ms()
                flushed = len(self._segments) - 1
            self._flush_segments(segments)
            if dir_dirty:
                fsync_dir(self.directory)
            new_durable = end
            with self._lock:
                self._flushed_segments = max(self._flushed_segments, flushed)
                if len(segments) > 1 and not self._closed:
                    # a segment was sealed since the last flush: persist the new recovery point so
                    # recovery after a crash re-validates only the active segment
                    write_checkpoint(self.directory, Checkpoint(end, self._log_start_offset))
        finally:
            with self._sync_cond:
                self._syncing = False
                if new_durable is not None:
                    self._durable_offset = max(self._durable_offset, new_durable)
                self._sync_cond.notify_all()
        return self._durable_offset

    @staticmethod
    def _flush_segments(segments) -> None:
        for segment in segments:
            segment.flush()

    def checkpoint(self) -> None:
        """Persist the recovery point and log start offset (cheap; done at roll and close)."""
        with self._lock:
            self._check_open()
            write_checkpoint(self.directory, Checkpoint(self._durable_offset, self._log_start_offset))

    # --- reading -------------------------------------------------------------------------------

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
        for record in batch_format.decode(segment.read(position, header.size), path=segment.log_path):
            if record.offset < start:
                continue
            if (record.timestamp_ms == target) if exact else (record.timestamp_ms >= target):
                return OffsetAndTimestamp(record.offset, record.timestamp_ms)
        return None

    # --- truncation ----------------------------------------------------------------------------

    def truncate(self, offset: int) -> int:
        """Remove every record at ``offset`` and above; returns the new ``log_end_offset``.

        Works at batch granularity: a batch that holds ``offset`` is removed whole, so the new end
        is the base offset of that batch (<= ``offset``). Truncating at or past the end is a no-op.
        Truncating below ``log_start_offset`` empties the log and restarts it at ``offset``.
        """
        with self._lock:
            self._check_open()
            if offset >= self.log_end_offset:
                return self.log_end_offset
            if offset <= self._log_start_offset:
                return self._truncate_fully(max(offset, 0))
            located = self._locate(offset, self.log_end_offset)
            if located is None:
                return self.log_end_offset
            segments, i, position, header = located
            new_end = min(offset, header.base_offset)
            keep = segments[: i + 1]
            for segment in segments[i + 1 :]:
                segment.delete_files()
            target = keep[-1]
            if position == 0 and len(keep) > 1:
                # the whole segment goes; the previous one becomes active again
                target.delete_files()
                keep = keep[:-1]
                target = keep[-1]
                target.truncate_to_position(target.size, target.next_offset)
            else:
                target.truncate_to_position(position, new_end)
            self._segments = keep
            self._bases = [s.base_offset for s in keep]
            self._flushed_segments = min(self._flushed_segments, len(keep) - 1)
            self._dir_dirty = True
            self._durable_offset = min(self._durable_offset, self.log_end_offset)
            self._sync_locked()
            return self.log_end_offset

    def _truncate_fully(self, new_start: int) -> int:
        for segment in self._segments:
            segment.delete_files()
        new = Segment.create(self.directory, new_start, self.config)
        self._segments = [new]
        self._bases = [new_start]
        self._log_start_offset = new_start
        self._durable_offset = new_start
        self._flushed_segments = 0
        self._sync_locked()
        return new_start

    def _sync_locked(self) -> None:
        """fsync all segments and the directory and write the checkpoint (writer lock held)."""
        self._flush_segments(self._segments[self._flushed_segments :])
        fsync_dir(self.directory)
        self._dir_dirty = False
        self._flushed_segments = len(self._segments) - 1
        self._durable_offset = self.log_end_offset
        write_checkpoint(self.directory, Checkpoint(self._durable_offset, self._log_start_offset))

    # --- deleting old segments (mechanism; the policy is logstore.retention) ----------------------

    def segment_infos(self) -> list[SegmentInfo]:
        """Metadata of every segment, oldest first, for :func:`logstore.retention.plan_retention`."""
        self._check_open()
        return [
            SegmentInfo(s.base_offset, s.next_offset, s.size, s.max_timestamp[0], s.last_modified_ms)
            for s in self._segments
        ]

    def delete_segments(self, base_offsets: Sequence[int], *, now_ms: int | None = None) -> int:
        """Delete the oldest segments named by ``base_offsets`` (which must be a prefix of the
        current segments, else nothing happens and 0 is returned). If the active segment is among
        them the log rolls first, so an empty active segment remains.

        ``log_start_offset`` rises to the first remaining segment's base offset. Files are renamed
        ``*.deleted`` at once and unlinked ``file_delete_delay_ms`` later by :meth:`purge_deleted`;
        readers that already hold a deleted segment (or a slice of it) keep reading it. Returns the
        number of segments deleted.
        """
        now_ms = self._clock_ms() if now_ms is None else now_ms
        with self._lock:
            self._check_open()
            count = len(base_offsets)
            if not count or [s.base_offset for s in self._segments[:count]] != list(base_offsets):
                return 0
            if count == len(self._segments):
                if self._segments[-1].size == 0:
                    count -= 1  # an empty active segment is never deleted
                    if not count:
                        return 0
                else:
                    self._roll(self.log_end_offset)
            doomed = self._segments[:count]
            self._segments = self._segments[count:]
            self._bases = self._bases[count:]
            self._flushed_segments = max(0, self._flushed_segments - count)
            self._log_start_offset = max(self._log_start_offset, self._segments[0].base_offset)
            self._durable_offset = max(self._durable_offset, min(self._log_start_offset, self.log_end_offset))
            for segment in doomed:
                segment.mark_deleted()
            fsync_dir(self.directory)
            write_checkpoint(self.directory, Checkpoint(self._durable_offset, self._log_start_offset))
            deadline = now_ms + self.config.file_delete_delay_ms
            self._pending_deletes.extend((deadline, segment) for segment in doomed)
        self.purge_deleted(now_ms)
        return len(doomed)

    def delete_records(self, before_offset: int) -> int:
        """Raise ``log_start_offset`` to ``before_offset`` (Kafka's DeleteRecords): records below
        it can no longer be read (:class:`OffsetOutOfRangeError`), and segments that lie wholly
        below it are deleted. ``before_offset`` above the high watermark raises
        ``OffsetOutOfRangeError``; at or below the current start it changes nothing.
        Returns the new ``log_start_offset``."""
        with self._lock:
            self._check_open()
            if not isinstance(before_offset, int) or isinstance(before_offset, bool):
                raise TypeError(f"before_offset must be an int, got {type(before_offset).__name__}")
            if before_offset > self.high_watermark:
                raise OffsetOutOfRangeError(before_offset, self._log_start_offset, self.high_watermark)
            if before_offset <= self._log_start_offset:
                return self._log_start_offset
            self._log_start_offset = before_offset
            write_checkpoint(self.directory, Checkpoint(self._durable_offset, self._log_start_offset))
            below = [s.base_offset for s in self._segments if s.next_offset <= before_offset]
            below = below[: len(self._segments) - 1] if self._segments[-1].size == 0 else below
            if below:
                self.delete_segments(below)
            return self._log_start_offset

    def purge_deleted(self, now_ms: int | None = None, *, everything: bool = False) -> int:
        """Unlink ``*.deleted`` files whose delay has passed; returns how many segments went."""
        now_ms = self._clock_ms() if now_ms is None else now_ms
        with self._lock:
            due = [s for deadline, s in self._pending_deletes if everything or deadline <= now_ms]
            self._pending_deletes = [(d, s) for d, s in self._pending_deletes if not (everything or d <= now_ms)]
        for segment in due:
            segment.delete_files()
        return len(due)

    # --- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Flush everything, write the checkpoint and the clean-shutdown marker; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._sync_locked()
            for segment in self._segments:
                segment.close()
            self.purge_deleted(everything=True)
            self._closed = True
            write_clean_shutdown_marker(self.directory)
        with self._appended_cond:
            self._appended_cond.notify_all()

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Log({self.directory!r}, log_start_offset={self._log_start_offset}, "
            f"log_end_offset={self.log_end_offset}, segments={len(self._segments)})"
        )
