"""The log cleaner: compaction passes over one log (the mechanism; the policy is in
:mod:`logstore.compaction`).

One pass (:func:`clean_log`), as Kafka's ``Cleaner.doClean``:

1. *Plan.* Read the first dirty offset from the :class:`CleanerCheckpoint`, compute the dirty
   range and ask :func:`~logstore.compaction.due_reason` whether the log is due.
2. *Map.* Walk the dirty batches and build the offset map: key hash -> latest offset, in a fixed
   memory budget (:class:`OffsetMap`). When the dirty range holds more keys than fit, the map
   stops before the first batch that might not fit; the pass then covers that prefix
   (``end_offset``) and the next pass continues from there. The map's values, sorted, then say
   which dirty offsets survive without hashing a key again: a dirty batch none of whose offsets
   is a value is dropped unread, and one all of whose offsets are values is copied unread.
3. *Rewrite.* Group the segments from the log start up to ``end_offset``
   (:func:`~logstore.compaction.plan_groups`) and stream each group into one new segment,
   ``<base>.log.cleaned`` with its two indexes: a batch all of whose records survive is copied
   byte for byte; a batch that loses records is rebuilt around the survivors (offsets never
   change; gaps appear); a batch that loses every record is dropped, except the last batch of
   each group, which stays as an empty header (records_count 0, no codec), as Kafka keeps the
   last batch of a pass. That keeps each new segment ending exactly where its group ended, which
   crash recovery relies on: it takes the range a finished rewrite replaces from the ``.swap``
   files' last offsets. The files are fsynced and given the mtime of the group's last source
   segment (time-based retention keeps seeing the old age).
4. *Swap.* One :meth:`Log.replace_segments` call for all groups of the pass: the rewrite is
   committed by one directory fsync, so a crash at any step leaves, after reopen, the log from
   before the pass or the log from after it -- never a half-cleaned mix. (Kafka swaps group by
   group; the price here is that all groups of a pass are on disk at once before the swap.)
5. *Checkpoint.* ``end_offset`` becomes the log's first dirty offset, written atomically, with the
   earliest delete horizon still pending (a pass is due again when it passes).

*Tombstones* (value ``None``) survive the pass that first keeps them; that pass gives their batch
a *delete horizon* = now + ``delete_retention_ms`` (KIP-534). A later pass at or after the
horizon drops them. Consumers therefore have at least ``delete_retention_ms`` to see a delete.

*Failures.* An exception in a pass (a corrupt batch, a full disk) removes the pass's ``.cleaned``
files, marks the log *uncleanable* in :class:`CleanerStats` (retried after
``retry_uncleanable_after_ms``) and is returned as a result, never raised: one bad partition
never stops the caller's loop over the others (KAFKA-7215).

*Memory.* ``memory_budget_bytes`` bounds what a pass allocates: a read window, the pending keys of
one chunk, and the offset map, which gets the rest. The exceptions: a single batch larger than
the window is read whole, and so is a batch that decompresses to more than a window.

Not handled (the library has no transactions): control batches are kept as they are, and
aborted transactional data is treated as committed.

This module holds the pass and what callers see of it. The pieces it drives are private modules:
:mod:`logstore._offset_map` (key hashes and the offset map), :mod:`logstore._record_layout`
(reading segments window by window and locating records) and :mod:`logstore._cleaned_writer`
(rebuilt batches, delete horizons and the ``.cleaned`` files of a group).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import batch as batch_format
from ._cleaned_writer import CleanedWriter, empty_batch, rebuilt_batch, remove_cleaned
from ._offset_map import OffsetMap, hash_key_list, hash_keys
from ._record_layout import Records, SegmentReader, locate_found, record_offsets, records_section
from .batch import BatchHeader
from .compaction import CleanableRange, cleanable_range, due_reason, plan_groups, retained, settings_from
from .errors import LogClosedError
from .files import CLEANER_CHECKPOINT_NAME, write_atomically
from .retention import SegmentInfo

__all__ = [
    "CHECKPOINT_NAME",
    "CleanerState",
    "CleanerCheckpoint",
    "CleanResult",
    "CleanerStats",
    "UncleanableLog",
    "OffsetMap",
    "hash_keys",
    "hash_key_list",
    "clean_log",
]

logger = logging.getLogger("logstore.cleaner")

CHECKPOINT_NAME = CLEANER_CHECKPOINT_NAME
DEFAULT_MEMORY_BUDGET_BYTES = 128 * 1024 * 1024  # Kafka's log.cleaner.dedupe.buffer.size
DEFAULT_RETRY_UNCLEANABLE_AFTER_MS = 3_600_000


# --- checkpoint ---------------------------------------------------------------------------------


class CleanerState(NamedTuple):
    """What a log's cleaner checkpoint holds."""

    first_dirty_offset: int  # every offset below it was cleaned by an earlier pass
    next_delete_horizon_ms: int | None = None  # earliest pending tombstone horizon, if any


class CleanerCheckpoint:
    """The first dirty offset of each log, in ``<log directory>/cleaner-offset-checkpoint``.

    The file is JSON, ``{"version": 0, "first_dirty_offset": N, "next_delete_horizon_ms": M}``,
    replaced atomically (tmp, fsync, rename, fsync dir). A missing or unreadable file means
    "clean from the log start": slower, never wrong -- so whoever truncates a log may simply
    delete the file (:meth:`forget`). It is read at every pass, never cached, for that reason.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @staticmethod
    def path(directory: str) -> str:
        return os.path.join(directory, CHECKPOINT_NAME)

    def get(self, directory: str) -> CleanerState | None:
        return self._read(directory)

    def set(self, directory: str, state: CleanerState) -> None:
        data = {"version": 0, **state._asdict()}
        with self._lock:
            write_atomically(self.path(directory), json.dumps(data).encode())

    def forget(self, directory: str) -> None:
        """Drop a log's checkpoint (after a truncation, say): its next pass starts at the log start."""
        with self._lock:
            try:
                os.unlink(self.path(directory))
            except FileNotFoundError:
                pass

    def _read(self, directory: str) -> CleanerState | None:
        try:
            with open(self.path(directory), "rb") as f:
                data = json.loads(f.read())
            if data.get("version") != 0:
                return None
            horizon = data.get("next_delete_horizon_ms")
            state = CleanerState(int(data["first_dirty_offset"]), None if horizon is None else int(horizon))
            return state if state.first_dirty_offset >= 0 else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None


# --- results and stats --------------------------------------------------------------------------


@dataclass(frozen=True)
class CleanResult:
    """What one :func:`clean_log` call did.

    ``status``: ``cleaned`` (a pass ran and was committed), ``not_due``, ``not_compacted`` (the
    cleanup policy has no ``compact``), ``uncleanable`` (skipped: an earlier pass failed and its
    retry time has not come), ``failed`` (this pass raised; ``error`` says what), ``aborted``
    (retention or truncation changed the segments under the pass; nothing was swapped) or
    ``closed`` (the log was closed meanwhile).
    """

    directory: str
    status: str
    reason: str | None = None  # why the pass was due
    first_dirty_offset: int | None = None
    end_offset: int | None = None  # the next pass starts here
    map_full: bool = False  # the pass covered only a prefix of the dirty range
    keys_mapped: int = 0
    bytes_read: int = 0  # of the batches rewritten (the pass's input)
    bytes_written: int = 0
    records_read: int = 0
    records_kept: int = 0
    segments_before: int = 0  # segments replaced
    segments_after: int = 0  # segments they became
    seconds: float = 0.0
    error: str | None = None

    @property
    def mb_per_s(self) -> float:
        return self.bytes_read / 1e6 / self.seconds if self.seconds > 0 else 0.0


class UncleanableLog(NamedTuple):
    error: str
    since_ms: int
    retry_at_ms: int


class CleanerStats:
    """Counters over every pass, and the logs currently marked uncleanable (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.passes = 0
        self.failures = 0
        self.bytes_read = 0
        self.bytes_written = 0
        self.records_read = 0
        self.records_kept = 0
        self.seconds = 0.0
        self._uncleanable: dict[str, UncleanableLog] = {}
        self._last: dict[str, CleanResult] = {}

    @property
    def uncleanable(self) -> dict[str, UncleanableLog]:
        """Directory -> why and since when, for every log marked uncleanable."""
        with self._lock:
            return dict(self._uncleanable)

    def last_result(self, directory: str) -> CleanResult | None:
        with self._lock:
            return self._last.get(directory)

    def clear_uncleanable(self, directory: str) -> None:
        with self._lock:
            self._uncleanable.pop(directory, None)

    def skip(self, directory: str, now_ms: int) -> bool:
        """Whether the log is uncleanable and its retry time has not come."""
        with self._lock:
            marked = self._uncleanable.get(directory)
            return marked is not None and now_ms < marked.retry_at_ms

    def record(self, result: CleanResult, *, now_ms: int, retry_after_ms: int) -> None:
        with self._lock:
            self._last[result.directory] = result
            if result.status == "failed":
                self.failures += 1
                self._uncleanable[result.directory] = UncleanableLog(
                    result.error or "", now_ms, now_ms + retry_after_ms
                )
                return
            if result.status == "cleaned":
                self.passes += 1
                self.bytes_read += result.bytes_read
                self.bytes_written += result.bytes_written
                self.records_read += result.records_read
                self.records_kept += result.records_kept
                self.seconds += result.seconds
            if result.status in ("cleaned", "not_due"):
                self._uncleanable.pop(result.directory, None)


# --- one pass -----------------------------------------------------------------------------------

_COPY, _DROP = -1, -2  # what to do with a batch (or the index of its records in the window)


def _memory_plan(memory_budget_bytes: int) -> tuple[int, int, int]:
    """``(read window bytes, keys per chunk, offset map bytes)`` for a budget.

    The working set of a window is about eight windows: the window, its records decompressed,
    joined again for hashing, about 20 int64 arrays for the (at most window / 64) records located
    at once, and the output waiting for ``writev``. Keys on their way into the map take about 128
    bytes each (hashes, values and the map's probe arrays), for a chunk plus one window of
    records. The map gets the rest."""
    window = min(1024 * 1024, max(64 * 1024, memory_budget_bytes // 32))
    chunk = min(32768, max(1024, memory_budget_bytes // 1024))
    map_bytes = memory_budget_bytes - 8 * window - 128 * (chunk + window // 64)
    if map_bytes < 64 * OffsetMap.SLOT_BYTES:
        raise ValueError(f"memory_budget_bytes={memory_budget_bytes} is too small for the cleaner")
    return window, chunk, map_bytes


class _Pass:
    """The state of one pass over one log (see the module docstring for the steps)."""

    def __init__(self, log, now_ms: int, memory_budget_bytes: int, state: CleanerState | None,
                 on_step: Callable[[str], None] | None):
        self.log = log
        self.config = log.config
        self.settings = settings_from(log.config)
        self.now_ms = now_ms
        self.state = state
        self.on_step = on_step or (lambda step: None)
        self.window_bytes, self.chunk_keys, self.map_bytes = _memory_plan(memory_budget_bytes)
        self.reader = SegmentReader(self.window_bytes)
        self.segments = log.segments
        self.seeds = (int.from_bytes(os.urandom(8), "little"), int.from_bytes(os.urandom(8), "little"))
        self.map = OffsetMap(0)
        self.sorted_values = np.zeros(0, np.int64)
        self.end_offset = 0
        self.map_full = False
        self.bytes_read = self.bytes_written = self.records_read = self.records_kept = 0
        self.changed = False
        self.next_horizon_ms: int | None = None

    # step 1: the plan

    def infos(self) -> list[SegmentInfo]:
        return [
            SegmentInfo(s.base_offset, s.next_offset, s.size, s.max_timestamp[0], s.last_modified_ms)
            for s in self.segments
        ]

    def plan(self, infos) -> tuple[CleanableRange, str | None]:
        log = self.log
        cleanable = cleanable_range(
            infos,
            first_dirty_offset=None if self.state is None else self.state.first_dirty_offset,
            log_start_offset=log.log_start_offset,
            high_watermark=log.high_watermark,
            now_ms=self.now_ms,
            min_compaction_lag_ms=self.settings.min_compaction_lag_ms,
        )
        first_dirty_ts = None
        if self.settings.max_compaction_lag_ms is not None and not cleanable.empty:
            first_dirty_ts = self._first_dirty_timestamp(cleanable.first_dirty_offset)
        reason = due_reason(
            cleanable,
            self.settings,
            now_ms=self.now_ms,
            first_dirty_timestamp_ms=first_dirty_ts,
            next_delete_horizon_ms=None if self.state is None else self.state.next_delete_horizon_ms,
        )
        return cleanable, reason

    def _first_dirty_timestamp(self, first_dirty: int) -> int | None:
        for segment in self.segments[:-1]:
            if segment.next_offset > first_dirty:
                found = segment.find_batch(first_dirty)
                if found is not None:
                    return found[1].max_timestamp
        return None

    # step 2: the map

    def build_map(self, first_dirty: int, limit: int) -> None:
        """Map the keys of ``[first_dirty, limit)``, or of the prefix that fits; sets
        ``end_offset`` (where the next pass starts) and ``map_full``."""
        self.map = offset_map = OffsetMap(self.map_bytes)
        self.end_offset = limit
        keys = _KeyCollector(self, first_dirty)
        for segment in self.segments[:-1]:
            if segment.next_offset <= first_dirty:
                continue
            if segment.base_offset >= limit:
                break
            start = 0
            if segment.base_offset < first_dirty:
                found = segment.find_batch(first_dirty)
                if found is None:
                    continue
                start = found[0]
            for view, position, batches in self.reader.windows(segment, start):
                for at, header in batches:
                    if header.next_offset > limit:
                        keys.finish()
                        self.end_offset = max(min(header.base_offset, limit), first_dirty)
                        return
                    if header.last_offset < first_dirty or header.is_control or not header.records_count:
                        continue
                    count = header.records_count
                    if offset_map.size + keys.pending + count > offset_map.capacity:
                        keys.finish()
                        if offset_map.size + count > offset_map.capacity:
                            if offset_map.size == 0:
                                raise ValueError(
                                    f"a batch of {count} records does not fit an offset map of "
                                    f"{offset_map.capacity} keys: raise memory_budget_bytes"
                                )
                            self.map_full = True
                            self.end_offset = max(header.base_offset, first_dirty)
                            return
                    keys.add(segment, view, position, at, header)
                keys.end_window()  # before the reader reuses the window
        keys.finish()

    # step 3: the rewrite

    def rewrite(self, groups: list[list[int]], first_dirty: int) -> list[int]:
        """Write every group's ``.cleaned`` files; returns their base offsets."""
        self.sorted_values = self.map.sorted_values()
        bases = []
        writers: list[CleanedWriter] = []
        try:
            for group in groups:
                sources = [self.segments[i] for i in group]
                writer = CleanedWriter(self.log.directory, sources[0].base_offset, self.config, self.window_bytes)
                writers.append(writer)
                if len(sources) > 1:
                    self.changed = True
                last = sources[-1]
                for segment in sources:
                    group_end = segment.size if segment is last else None
                    for view, position, batches in self.reader.windows(segment, 0):
                        self._rewrite_window(segment, view, position, batches, writer, group_end, first_dirty)
                        writer.flush()
                writer.finish(os.fstat(last.file.fd).st_mtime_ns)
                self.bytes_written += writer.position
                bases.append(writer.base_offset)
                self.on_step("group_written")
        except BaseException:
            for writer in writers:
                writer.abort()
            raise
        return bases

    def _rewrite_window(self, segment, view, position, batches, writer, group_end, first_dirty) -> None:
        end = self.end_offset
        now = self.now_ms
        values = self.sorted_values
        decisions: list[tuple[int, BatchHeader, int]] = []  # (at, header, _COPY, _DROP or index in found)
        found: list = []  # batches whose records must be looked at one by one
        found_bytes = found_records = 0
        for at, header in batches:
            self.bytes_read += header.size
            self.records_read += header.records_count
            last_of_group = group_end is not None and position + at + header.size == group_end
            if header.base_offset >= end or header.is_control or not header.records_count:
                decisions.append((at, header, _COPY if header.records_count or last_of_group else _DROP))
                continue
            horizon = header.delete_horizon_ms
            if header.base_offset >= first_dirty and header.last_offset < end:
                # wholly in the mapped range: the map's values say which offsets are the latest
                lo, hi = np.searchsorted(values, (header.base_offset * 2, header.last_offset * 2 + 2)).tolist()
                if lo == hi:
                    decisions.append((at, header, _DROP))
                    continue
                expiring = (values[lo:hi] & 1).any() and (horizon is None or now >= horizon)
                if hi - lo == header.records_count and not expiring:
                    decisions.append((at, header, _COPY))
                    continue
            decisions.append((at, header, len(found)))
            section = records_section(segment, view, position, at, header)
            found.append((at, header, section))
            found_bytes += len(section)
            found_records += header.records_count
            if found_bytes >= self.window_bytes or found_records >= self.window_bytes // 64:
                self._emit(segment, view, position, decisions, found, writer, group_end, first_dirty)
                decisions, found, found_bytes, found_records = [], [], 0, 0
        self._emit(segment, view, position, decisions, found, writer, group_end, first_dirty)

    def _emit(self, segment, view, position, decisions, found, writer, group_end, first_dirty) -> None:
        """Carry out ``decisions`` (in order), filtering the records of the batches in ``found``."""
        if found:
            records = locate_found(segment, position, found)
            keep, horizons = self._keep(records, found, first_dirty)
        for at, header, action in decisions:
            data = None
            if action >= 0:
                first, last = int(records.first[action]), int(records.first[action + 1])
                kept = keep[first:last]
                if horizons[action] is None and kept.all():
                    action = _COPY
                elif not kept.any():
                    action = _DROP
                else:
                    data = rebuilt_batch(header, records, first + np.flatnonzero(kept), horizons[action])
            if action == _COPY:
                writer.add(header, view=view, at=at)
                self.records_kept += header.records_count
                self._note_horizon(header)
                continue
            self.changed = True
            if action == _DROP:
                if group_end is not None and position + at + header.size == group_end:
                    writer.add(header, empty_batch(header))  # keeps the group's last offset
                continue
            rebuilt = batch_format.unpack_header(data)
            writer.add(rebuilt, data)
            self.records_kept += rebuilt.records_count
            self._note_horizon(rebuilt)

    def _keep(self, records: Records, found: list, first_dirty: int) -> tuple[np.ndarray, list]:
        """The retention rule for every record of ``found``, and per batch the delete horizon
        to give it now (``None``: keep its own)."""
        end, now, values = self.end_offset, self.now_ms, self.sorted_values
        counts = np.diff(records.first)
        offsets = record_offsets(records, found)
        has_key = records.key_lengths >= 0
        is_latest = np.ones(len(offsets), bool)
        dirty = (offsets >= first_dirty) & (offsets < end)
        if dirty.any():
            if len(values):
                at = np.minimum(np.searchsorted(values, offsets[dirty] * 2), len(values) - 1)
                is_latest[dirty] = (values[at] >> 1) == offsets[dirty]
            else:
                is_latest[dirty] = False
        clean = (offsets < first_dirty) & has_key  # latest unless a newer offset was mapped
        if clean.any():
            stored = self.map.get(*hash_keys(records.buffer, records.key_starts[clean],
                                             records.key_lengths[clean], self.seeds))
            is_latest[clean] = (stored == 0) | (((stored - 1) >> 1) <= offsets[clean])
        horizons = [f[1].delete_horizon_ms for f in found]
        passed = np.repeat([h is not None and now >= h for h in horizons], counts)
        tombstone = records.value_lengths < 0
        keep = retained(offsets, is_latest, has_key, tombstone, end_offset=end, horizon_passed=passed)
        kept_tombstones = np.add.reduceat(keep & tombstone & (offsets < end), records.first[:-1])
        new_horizon = now + self.settings.delete_retention_ms
        return keep, [new_horizon if h is None and k else None
                      for h, k in zip(horizons, kept_tombstones.tolist(), strict=True)]


    def _note_horizon(self, header: BatchHeader) -> None:
        horizon = header.delete_horizon_ms
        if horizon is not None and horizon > self.now_ms and header.records_count:
            if self.next_horizon_ms is None or horizon < self.next_horizon_ms:
                self.next_horizon_ms = horizon


class _KeyCollector:
    """The keys of the dirty batches on their way into the offset map: located and hashed about
    a window of records at a time, put into the map a chunk of keys at a time."""

    def __init__(self, work: _Pass, first_dirty: int):
        self.work = work
        self.first_dirty = first_dirty
        self.found: list = []  # (position in window, header, section) not hashed yet
        self.found_bytes = self.found_records = 0
        self.chunk: list = []  # (h1, h2, values) not in the map yet
        self.chunk_keys = 0
        self.segment = None
        self.position = 0

    @property
    def pending(self) -> int:
        """At most this many keys are on their way."""
        return self.chunk_keys + self.found_records

    def add(self, segment, view, position: int, at: int, header: BatchHeader) -> None:
        self.segment, self.position = segment, position
        section = records_section(segment, view, position, at, header)
        self.found.append((at, header, section))
        self.found_bytes += len(section)
        self.found_records += header.records_count
        if self.found_bytes >= self.work.window_bytes or self.found_records >= self.work.window_bytes // 64:
            self.end_window()

    def end_window(self) -> None:
        """Hash what was found (its views into the window are about to go)."""
        if self.found:
            work = self.work
            records = locate_found(self.segment, self.position, self.found)
            offsets = record_offsets(records, self.found)
            values = offsets * 2 + 1 + (records.value_lengths < 0)
            wanted = (records.key_lengths >= 0) & (offsets >= self.first_dirty)
            starts, lengths = records.key_starts, records.key_lengths
            if not wanted.all():
                starts, lengths, values = starts[wanted], lengths[wanted], values[wanted]
            self.chunk.append((*hash_keys(records.buffer, starts, lengths, work.seeds), values))
            self.chunk_keys += len(values)
            self.found, self.found_bytes, self.found_records = [], 0, 0
        if self.chunk_keys >= self.work.chunk_keys:
            self.put()

    def put(self) -> None:
        if self.chunk:
            self.work.map.put(*(np.concatenate(column) for column in zip(*self.chunk, strict=True)))
            self.chunk, self.chunk_keys = [], 0

    def finish(self) -> None:
        self.end_window()
        self.put()


# --- the entry point ----------------------------------------------------------------------------


def clean_log(
    log,
    *,
    now_ms: int,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
    checkpoint: CleanerCheckpoint,
    stats: CleanerStats | None = None,
    retry_uncleanable_after_ms: int = DEFAULT_RETRY_UNCLEANABLE_AFTER_MS,
    on_step: Callable[[str], None] | None = None,
) -> CleanResult:
    """Run one compaction pass over ``log`` if it is due; never raises for a failed pass.

    ``now_ms`` is the time tombstone horizons and compaction lags are measured against.
    ``memory_budget_bytes`` bounds the pass's memory (see the module docstring). ``stats``
    collects counters and the uncleanable marks; a log marked uncleanable is skipped until
    ``retry_uncleanable_after_ms`` after its failure. ``on_step`` (tests) is called with
    ``"map_built"``, ``"group_written"`` (after each group's files are fsynced),
    ``"cleaned_written"``, ``"swapped"`` and ``"checkpointed"``.
    """
    _memory_plan(memory_budget_bytes)  # a budget too small is the caller's error: raise it now
    directory = log.directory
    if "compact" not in log.config.cleanup_policy.split(","):
        return CleanResult(directory, "not_compacted")
    if stats is not None and stats.skip(directory, now_ms):
        return CleanResult(directory, "uncleanable", error=stats.uncleanable[directory].error)
    started = time.perf_counter()
    try:
        result = _run(log, now_ms, memory_budget_bytes, checkpoint, on_step)
    except Exception as error:  # noqa: BLE001 - one bad log must not stop the caller's loop
        if log.closed or isinstance(error, LogClosedError):
            return CleanResult(directory, "closed")
        logger.warning("cleaning %s failed; marked uncleanable: %r", directory, error)
        result = CleanResult(directory, "failed", seconds=time.perf_counter() - started, error=repr(error))
    else:
        result = _with_seconds(result, time.perf_counter() - started)
        if result.status == "cleaned":
            logger.info(
                "cleaned %s (%s): %.1f MB read in %.2f s (%.1f MB/s), %d of %d records kept, "
                "%d segment(s) -> %d, next dirty offset %d%s",
                directory, result.reason, result.bytes_read / 1e6, result.seconds, result.mb_per_s,
                result.records_kept, result.records_read, result.segments_before, result.segments_after,
                result.end_offset, " (map full)" if result.map_full else "",
            )
    if stats is not None:
        stats.record(result, now_ms=now_ms, retry_after_ms=retry_uncleanable_after_ms)
    return result


def _with_seconds(result: CleanResult, seconds: float) -> CleanResult:
    return dataclasses.replace(result, seconds=seconds)


def _run(log, now_ms, memory_budget_bytes, checkpoint: CleanerCheckpoint, on_step) -> CleanResult:
    directory = log.directory
    state = checkpoint.get(directory)
    work = _Pass(log, now_ms, memory_budget_bytes, state, on_step)
    infos = work.infos()
    cleanable, reason = work.plan(infos)
    if reason is None:
        return CleanResult(directory, "not_due", first_dirty_offset=cleanable.first_dirty_offset)
    first_dirty = cleanable.first_dirty_offset
    aborted = CleanResult(directory, "aborted", reason=reason, first_dirty_offset=first_dirty)
    bases: list[int] = []
    try:
        work.build_map(first_dirty, cleanable.first_uncleanable_offset)
        work.on_step("map_built")
        config = log.config
        groups = plan_groups(
            infos,
            end_offset=work.end_offset,
            segment_bytes=config.segment_bytes,
            segment_index_bytes=config.segment_index_bytes,
            index_interval_bytes=config.index_interval_bytes,
        )
        old = [work.segments[i] for group in groups for i in group]
        bases = work.rewrite(groups, first_dirty) if groups else []
        work.on_step("cleaned_written")
        if work.changed:
            if not log.replace_segments(old, bases, now_ms=now_ms):
                return aborted
            work.on_step("swapped")
        else:
            remove_cleaned(directory, bases)  # every batch was copied as it was: keep the old files
    except Exception:
        remove_cleaned(directory, bases)
        current = log.segments
        if any(segment not in current for segment in work.segments[:-1]):
            return aborted  # truncation or retention took segments from under the pass
        raise
    checkpoint.set(directory, CleanerState(work.end_offset, work.next_horizon_ms))
    work.on_step("checkpointed")
    return CleanResult(
        directory,
        "cleaned",
        reason=reason,
        first_dirty_offset=first_dirty,
        end_offset=work.end_offset,
        map_full=work.map_full,
        keys_mapped=work.map.size,
        bytes_read=work.bytes_read,
        bytes_written=work.bytes_written,
        records_read=work.records_read,
        records_kept=work.records_kept,
        segments_before=len(old) if work.changed else 0,
        segments_after=len(bases) if work.changed else 0,
    )
