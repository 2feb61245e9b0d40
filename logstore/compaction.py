"""Compaction policy (cleanup policy ``compact``): which part of a log to clean, whether it is due,
how to regroup its segments, and which records survive. Pure functions.

Nothing here touches a file. :mod:`logstore.cleaner` gathers segment metadata, asks these
functions, and carries the answer out (offset map, rewrite, :meth:`Log.replace_segments`). Tests
call them with any ``now_ms`` and never sleep. The rules are Kafka's (``LogCleanerManager``,
``LogCleaner``), with the differences stated where they apply.

*Which range* (:func:`cleanable_range`). Offsets below the *first dirty offset* (from the
cleaner checkpoint; the log start when there is none or it lies outside the log) were cleaned by
an earlier pass: the *clean tail*. The *dirty range* runs from there to the *first uncleanable
offset*: the smallest of the active segment's base offset (the active segment is never cleaned),
the high watermark, and, with ``min_compaction_lag_ms``, the base of the first dirty segment
holding a record younger than the lag.

*Due* (:func:`due_reason`). A log is cleaned when its dirty ratio -- dirty bytes over the bytes of
the clean tail plus the dirty range, counted in whole segments -- exceeds
``min_cleanable_dirty_ratio``; or, with ``max_compaction_lag_ms``, when the first dirty batch is
older than the lag (KIP-354); or when a tombstone's delete horizon recorded by an earlier pass has
passed. Kafka has no such third trigger: a log whose dirty ratio stays low keeps its expired
tombstones until something else makes it due (pain point 6).

*Groups* (:func:`plan_groups`). Every pass rewrites the segments from the log start up to the end
of what the offset map covered, and merges neighbours into groups of at most ``segment_bytes``
(counted before cleaning, so a group never outgrows a segment), whose indexes are sure to fit
``segment_index_bytes`` and whose offsets span less than 2**31 (relative offsets in the indexes).
Repeated passes therefore do not leave a trail of tiny segments.

*Records* (:func:`retained`). A record at or beyond the end of the pass's map is kept untouched.
Below it, a record is kept if it is the latest of its key in the cleaned range, has a key, and is
not a tombstone whose batch's delete horizon (KIP-534) has passed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .retention import SegmentInfo

__all__ = [
    "CompactionSettings",
    "settings_from",
    "CleanableRange",
    "cleanable_range",
    "due_reason",
    "plan_groups",
    "retained",
    "MAX_OFFSET_SPAN",
]

#: a segment's offsets must stay within this of its base offset (u32 relative offsets; Kafka keeps
#: them below Int.MAX)
MAX_OFFSET_SPAN = 2**31 - 1
_MIN_BATCH_BYTES = 61  # an empty batch: the most index entries a byte count can need
_OFFSET_ENTRY_BYTES = 8
_TIME_ENTRY_BYTES = 12


class CompactionSettings(NamedTuple):
    """The compaction settings of one log (Kafka's defaults)."""

    min_cleanable_dirty_ratio: float = 0.5
    min_compaction_lag_ms: int = 0
    max_compaction_lag_ms: int | None = None  # None: no limit (Kafka's Long.MAX)
    delete_retention_ms: int = 86_400_000  # tombstones live this long after their first cleaning


def settings_from(config) -> CompactionSettings:
    """Read the compaction settings of a :class:`~logstore.config.LogConfig`; fields it does not
    have yet take Kafka's defaults."""
    defaults = CompactionSettings()
    return CompactionSettings(*(getattr(config, name, default) for name, default in defaults._asdict().items()))


class CleanableRange(NamedTuple):
    """``[first_dirty_offset, first_uncleanable_offset)`` is dirty; sizes are whole segments."""

    first_dirty_offset: int
    first_uncleanable_offset: int
    clean_bytes: int
    dirty_bytes: int

    @property
    def dirty_ratio(self) -> float:
        total = self.clean_bytes + self.dirty_bytes
        return self.dirty_bytes / total if total else 0.0

    @property
    def empty(self) -> bool:
        return self.first_uncleanable_offset <= self.first_dirty_offset


def cleanable_range(
    segments: Sequence[SegmentInfo],
    *,
    first_dirty_offset: int | None,
    log_start_offset: int,
    high_watermark: int,
    now_ms: int,
    min_compaction_lag_ms: int = 0,
) -> CleanableRange:
    """The dirty range of a log whose segments are ``segments`` (oldest first, the last active).

    ``first_dirty_offset`` is the checkpointed one (``None`` if there is none); it is reset to
    ``log_start_offset`` when it lies outside ``[log_start_offset, log_end_offset]`` (the log was
    truncated or its start moved), as Kafka does. Edges: no sealed segment gives an empty range.
    """
    if not segments:
        return CleanableRange(log_start_offset, log_start_offset, 0, 0)
    log_end_offset = segments[-1].next_offset
    first_dirty = first_dirty_offset
    if first_dirty is None or not log_start_offset <= first_dirty <= log_end_offset:
        first_dirty = log_start_offset
    first_uncleanable = min(segments[-1].base_offset, high_watermark)
    sealed = segments[:-1]
    if min_compaction_lag_ms > 0:
        for segment in sealed:
            if segment.next_offset <= first_dirty or segment.base_offset >= first_uncleanable:
                continue
            if segment.largest_timestamp_ms > now_ms - min_compaction_lag_ms:
                first_uncleanable = min(first_uncleanable, segment.base_offset)
                break
    first_uncleanable = max(first_uncleanable, first_dirty)
    clean_bytes = dirty_bytes = 0
    for segment in sealed:
        if segment.next_offset <= first_dirty:
            clean_bytes += segment.size_bytes
        elif segment.base_offset < first_uncleanable:
            dirty_bytes += segment.size_bytes
    return CleanableRange(first_dirty, first_uncleanable, clean_bytes, dirty_bytes)


def due_reason(
    cleanable: CleanableRange,
    settings: CompactionSettings,
    *,
    now_ms: int,
    first_dirty_timestamp_ms: int | None = None,
    next_delete_horizon_ms: int | None = None,
) -> str | None:
    """Why the log should be cleaned now -- ``"dirty_ratio"``, ``"max_compaction_lag"`` or
    ``"delete_horizon"`` -- or ``None`` if it should not.

    ``first_dirty_timestamp_ms``: the max timestamp of the first dirty batch (``None`` or negative
    if unknown). ``next_delete_horizon_ms``: the earliest delete horizon an earlier pass wrote.
    """
    dirty = not cleanable.empty and cleanable.dirty_bytes > 0
    if dirty and cleanable.dirty_ratio > settings.min_cleanable_dirty_ratio:
        return "dirty_ratio"
    lag = settings.max_compaction_lag_ms
    if (
        dirty
        and lag is not None
        and first_dirty_timestamp_ms is not None
        and 0 <= first_dirty_timestamp_ms < now_ms - lag
    ):
        return "max_compaction_lag"
    if next_delete_horizon_ms is not None and now_ms >= next_delete_horizon_ms:
        return "delete_horizon"
    return None


def plan_groups(
    segments: Sequence[SegmentInfo],
    *,
    end_offset: int,
    segment_bytes: int,
    segment_index_bytes: int,
    index_interval_bytes: int,
) -> list[list[int]]:
    """Indexes into ``segments`` (oldest first, the last active) of the rewrite groups of a pass
    whose map ends at ``end_offset``: every sealed segment starting below ``end_offset``, split into
    runs of neighbours that fit one segment. Each group is rewritten into one new segment named by
    its first segment's base offset. A segment too large for any group stays alone.
    """
    # the most index entries ``size`` bytes can produce: one per index_interval_bytes, or one per
    # batch when batches are larger (the first batch of a segment is never indexed; +1 for the final
    # time-index entry written on seal)
    per_entry = max(index_interval_bytes + 1, _MIN_BATCH_BYTES)
    offset_entries = segment_index_bytes // _OFFSET_ENTRY_BYTES
    time_entries = segment_index_bytes // _TIME_ENTRY_BYTES

    def fits(size: int, first_base: int, next_offset: int) -> bool:
        entries = size // per_entry + 1
        return (
            size <= segment_bytes
            and entries <= offset_entries
            and entries + 1 <= time_entries
            and next_offset - 1 - first_base <= MAX_OFFSET_SPAN
        )

    groups: list[list[int]] = []
    size = 0
    for i, segment in enumerate(segments[:-1]):
        if segment.base_offset >= end_offset:
            break
        if groups and fits(size + segment.size_bytes, segments[groups[-1][0]].base_offset, segment.next_offset):
            groups[-1].append(i)
            size += segment.size_bytes
        else:
            groups.append([i])
            size = segment.size_bytes
    return groups


def retained(
    offsets: np.ndarray,
    is_latest: np.ndarray,
    has_key: np.ndarray,
    is_tombstone: np.ndarray,
    *,
    end_offset: int,
    horizon_passed: bool | np.ndarray,
) -> np.ndarray:
    """Which records of one batch survive a pass (a boolean array, one entry per record).

    ``is_latest``: the record is the newest of its key among the mapped offsets, or its key is
    not in the map at all (it lies in the clean tail and no newer record of its key was mapped).
    ``horizon_passed``: the record's batch carries a delete horizon and ``now_ms`` has reached it
    (one bool for all, or one per record).
    """
    keep = is_latest & has_key & ~(is_tombstone & horizon_passed)
    return keep | (offsets >= end_offset)
