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

import os
import threading
import time
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from . import batch as batch_format
from .batch import CRC_START, HEADER_SIZE, MAGIC, MIN_BATCH_LENGTH, BatchHeader, Compression, crc32c_oneshot
from .config import LogConfig
from .errors import (
    CorruptBatchError,
    InvalidRecordError,
    LogClosedError,
    RecordTooLargeError,
)
from .files import CLEANER_CHECKPOINT_NAME, fsync_dir
from .log_cleanup import LogCleanup
from .log_read import EARLIEST, LATEST, MAX_TIMESTAMP, LogReads, OffsetAndTimestamp
from .recovery import Checkpoint, open_segments, write_checkpoint, write_clean_shutdown_marker
from .segment import Segment

__all__ = ["Log", "AppendInfo", "OffsetAndTimestamp", "LATEST", "EARLIEST", "MAX_TIMESTAMP"]

class AppendInfo(NamedTuple):
    """Where an append went: offsets ``base_offset..last_offset`` and the largest timestamp."""

    base_offset: int
    last_offset: int
    max_timestamp_ms: int
    record_count: int


def _now_ms() -> int:
    return int(time.time() * 1000)


_new_header = tuple.__new__


def _with_base_offset(header: BatchHeader, base_offset: int) -> BatchHeader:
    """``header._replace(base_offset=base_offset)``, without its per-call overhead."""
    return _new_header(BatchHeader, (base_offset, *header[1:]))


_HEADER_UNPACK = batch_format.HEADER.unpack_from


class Log(LogReads, LogCleanup):
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
        self._append_waiters = 0  # threads in wait_for_append (changed under _appended_cond)
        self._truncations = 0
        self._dir_dirty = False
        self._pending_deletes: list[tuple[int, Segment]] = []
        self._compacted = "compact" in self.config.cleanup_policy.split(",")
        self.recovered_bytes_truncated = 0
        self.was_clean_shutdown = False
        os.makedirs(self.directory, exist_ok=True)
        self._load()

    # --- open and recovery ---------------------------------------------------------------------

    def _load(self) -> None:
        directory = self.directory
        loaded = open_segments(directory, self.config)
        self.was_clean_shutdown = loaded.clean
        self.recovered_bytes_truncated = loaded.truncated_bytes
        self._segments = loaded.segments
        self._bases = [s.base_offset for s in loaded.segments]
        self._log_start_offset = loaded.log_start_offset
        self._durable_offset = loaded.recovery_point
        # what survived recovery may still be only in the page cache: durable is what the
        # checkpoint proved (Kafka's rule); the next flush covers the rest
        self._flushed_segments = self._bisect_segment(self._durable_offset)
        self._last_flush_ms = self._clock_ms()
        self._unflushed_messages = 0
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
    def truncations(self) -> int:
        """How many times :meth:`truncate` removed records since this log was opened: a cache
        of the log's tail (the server's idempotent-producer state) compares it to notice."""
        return self._truncations

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
        if self._compacted and (keys is None or any(k is None for k in keys)):
            raise InvalidRecordError(
                f"log {self.directory} is compacted (cleanup_policy={self.config.cleanup_policy!r}): "
                "every record needs a key"
            )
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
        of this log (outside the CRC, so the batch stays valid). In a compacted log the records
        are decoded too, to refuse keyless ones (:class:`InvalidRecordError`), as Kafka does. Anything invalid raises
        :class:`CorruptBatchError` and nothing is written; a batch over ``max_batch_bytes`` raises
        :class:`RecordTooLargeError`.
        """
        buf = memoryview(data)
        if buf.format != "B" or buf.ndim != 1 or not buf.c_contiguous:
            buf = buf.cast("B")
        total = len(buf)
        if total >= HEADER_SIZE and not self._compacted:
            fields = _HEADER_UNPACK(buf, 0)
            if fields[1] + 12 == total and fields[3] == MAGIC and fields[1] >= MIN_BATCH_LENGTH:
                info = self._append_one(buf, fields)
                if info is not None:
                    return info
        if not total:
            raise ValueError("no batches given")
        max_batch_bytes = self.config.max_batch_bytes
        validate = batch_format.validate
        headers: list[tuple[int, BatchHeader]] = []
        position = 0
        while position < total:
            if total - position < batch_format.HEADER_SIZE:
                raise CorruptBatchError(
                    f"{total - position} trailing bytes are not a whole batch", position=position
                )
            header = validate(buf, position)
            size = header.batch_length + batch_format.LOG_OVERHEAD
            if size > max_batch_bytes:
                raise RecordTooLargeError(
                    f"batch of {size} bytes exceeds max_batch_bytes={max_batch_bytes}"
                )
            headers.append((position, header))
            position += size
        if self._compacted:
            for position, _header in headers:
                if any(key is None for key in batch_format.decode_columns(buf, position).keys):
                    raise InvalidRecordError(
                        f"log {self.directory} is compacted: a batch at position {position} has a record without a key"
                    )
        with self._lock:
            if self._closed:
                self._check_open()
            next_offset = self._segments[-1].next_offset
            for i, (position, header) in enumerate(headers):
                # BatchHeader with the new base offset (what _replace does, at a third of its cost)
                headers[i] = (position, _with_base_offset(header, next_offset))
                next_offset += header.last_offset_delta + 1
            info = self._append_validated(buf, headers)
        self._after_append(info)
        return info

    def _append_one(self, buf: memoryview, fields: tuple) -> AppendInfo | None:
        """append_batches of exactly one batch whose header is ``fields`` (magic and length
        checked): the producer's hot path. None when the general path must take it (a roll)."""
        total = len(buf)
        if total > self.config.max_batch_bytes:
            raise RecordTooLargeError(f"batch of {total} bytes exceeds max_batch_bytes={self.config.max_batch_bytes}")
        crc = fields[4]
        actual = crc32c_oneshot(buf[CRC_START:])
        if actual != crc:
            raise CorruptBatchError(
                f"CRC-32C mismatch: stored {crc:#010x}, computed {actual:#010x}", position=0
            )
        last_offset_delta, max_timestamp = fields[6], fields[8]
        with self._lock:
            if self._closed:
                self._check_open()
            active = self._segments[-1]
            first_offset = active.next_offset
            if not active.append_one(buf, first_offset, last_offset_delta, max_timestamp, self._clock_ms(),
                                     self._max_segment_ms):
                return None
            self._unflushed_messages += last_offset_delta + 1
        info = AppendInfo(first_offset, first_offset + last_offset_delta, max_timestamp, last_offset_delta + 1)
        self._after_append(info)
        return info

    def _append_validated(self, data, headers: list[tuple[int, BatchHeader]]) -> AppendInfo:
        """Write batches whose offsets are assigned (in ``headers``: the bytes in ``data`` still
        carry the producer's base offsets, replaced on the way to disk); the writer lock is held."""
        size = len(data)
        config = self.config
        if size > config.max_batch_bytes and len(headers) == 1:
            raise RecordTooLargeError(
                f"batch of {size} bytes exceeds max_batch_bytes={config.max_batch_bytes}"
            )
        if size > config.segment_bytes:
            raise RecordTooLargeError(f"{size} bytes do not fit in a segment of {config.segment_bytes} bytes")
        first = headers[0][1]
        last = headers[-1][1] if len(headers) > 1 else first
        first_offset = first.base_offset
        next_offset = last.base_offset + last.last_offset_delta + 1
        active = self._segments[-1]
        now_ms = self._clock_ms()
        if not active.can_append(first_offset, next_offset - 1, size) or self._segment_too_old(active, now_ms):
            active = self._roll(first_offset)
        active.append(data, headers, now_ms)
        self._unflushed_messages += next_offset - first_offset
        max_ts = first.max_timestamp if last is first else max(h.max_timestamp for _p, h in headers)
        return AppendInfo(first_offset, next_offset - 1, max_ts, next_offset - first_offset)

    def _after_append(self, info: AppendInfo) -> None:
        # Waiters count themselves in before they look at log_end_offset (under the condition),
        # and the end is published before this reads the count: a waiter not counted yet will
        # see the new end itself, so skipping the condition when nobody waits loses no wake-up.
        if self._append_waiters:
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
            self._append_waiters += 1
            try:
                while self.log_end_offset <= offset and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._appended_cond.wait(remaining)
            finally:
                self._append_waiters -= 1
        return self.log_end_offset > offset

    # --- rolling -------------------------------------------------------------------------------

    def _segment_too_old(self, segment: Segment, now_ms: int) -> bool:
        base = segment.rolling_base_ms()
        return base is not None and now_ms - base > self._max_segment_ms

    @property
    def _max_segment_ms(self) -> int:
        """``segment_ms``, or ``max_compaction_lag_ms`` if smaller for a compacted log (the cleaner
        never touches the active segment, so it must roll for the lag bound to hold; Kafka too)."""
        lag = self.config.max_compaction_lag_ms
        if self._compacted and lag is not None:
            return min(self.config.segment_ms, lag)
        return self.config.segment_ms

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

    # --- truncation ----------------------------------------------------------------------------

    def truncate(self, offset: int) -> int:
        """Remove every record at ``offset`` and above; returns the new ``log_end_offset``.

        Works at batch granularity: a batch that holds ``offset`` is removed whole, so the new end
        is the base offset of that batch (<= ``offset``). Truncating at or past the end is a no-op.
        Truncating below ``log_start_offset`` empties the log and restarts it at ``offset``.
        The cleaner's progress file is dropped, so its next pass starts over (never wrong).
        """
        with self._lock:
            self._check_open()
            if offset >= self.log_end_offset:
                return self.log_end_offset
            try:
                os.unlink(os.path.join(self.directory, CLEANER_CHECKPOINT_NAME))
            except FileNotFoundError:
                pass
            self._truncations += 1
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
