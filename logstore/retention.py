"""Retention policy (cleanup policy ``delete``): which old segments to delete. Pure functions.

Nothing here touches a file: :func:`plan_retention` looks at segment metadata and returns a plan;
the background thread hands the plan to :meth:`logstore.log.Log.delete_segments`, which carries
it out. Tests call it with any ``now_ms`` and never sleep.

Rules, checked oldest segment first; only a *prefix* of segments is ever deleted (the walk stops
at the first segment no rule deletes):

* ``log_start_offset``: a segment whose records all lie below the log start offset (raised by
  ``delete_records``) is deleted.
* ``retention_bytes``: while the partition is larger than the limit, the oldest segment is
  deleted if the partition stays at or above the limit without it (it never dips below the limit,
  and may stay above it by less than one segment), as Kafka does.
* ``retention_ms``: a segment is deleted once ``now_ms - retention_time_ms > retention_ms``.
  Its retention time is the smaller of its largest record timestamp and the time its file was
  last written (``mtime``). Kafka uses the record timestamp alone, so one record stamped in the
  far future pins its segment and every later one forever (KAFKA-18929); the file time caps that.
* A segment is deleted only when all its records are below the high watermark.
* The active segment follows the same rules under both limits (Kafka treats it differently for
  time and size, KAFKA-16414): when it is due, the log rolls a new empty active segment first and
  then deletes it. An empty active segment is never deleted.

Worst-case lifetime of a record: ``retention_ms`` + the check interval of the background thread
(``retention_check_interval_ms``) + ``file_delete_delay_ms`` until its bytes leave the disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["SegmentInfo", "RetentionPlan", "plan_retention", "retention_time_ms"]


class SegmentInfo(NamedTuple):
    """What retention needs to know of one segment (oldest first in a list; the last is active)."""

    base_offset: int
    next_offset: int  # one past its last offset
    size_bytes: int
    largest_timestamp_ms: int  # -1 when no record carries a timestamp
    last_modified_ms: int


class RetentionPlan(NamedTuple):
    """Delete the ``base_offsets`` segments (a prefix, oldest first), each for its ``reasons``
    entry; ``includes_active`` means the active segment is among them (roll first)."""

    base_offsets: tuple[int, ...]
    reasons: tuple[str, ...]
    includes_active: bool

    @property
    def empty(self) -> bool:
        return not self.base_offsets


def retention_time_ms(segment: SegmentInfo) -> int:
    """The time retention.ms counts from (see the module docstring)."""
    if segment.largest_timestamp_ms < 0:
        return segment.last_modified_ms
    return min(segment.largest_timestamp_ms, segment.last_modified_ms)


def plan_retention(
    segments: Sequence[SegmentInfo],
    *,
    now_ms: int,
    retention_ms: int | None,
    retention_bytes: int | None,
    log_start_offset: int,
    high_watermark: int,
) -> RetentionPlan:
    """The prefix of ``segments`` to delete now. Edges: an empty list or an empty active
    segment alone gives an empty plan; ``None`` limits never delete anything."""
    excess = None
    if retention_bytes is not None:
        excess = sum(s.size_bytes for s in segments) - retention_bytes
    chosen: list[int] = []
    reasons: list[str] = []
    for i, segment in enumerate(segments):
        is_active = i == len(segments) - 1
        if is_active and segment.size_bytes == 0:
            break
        if segment.next_offset > high_watermark:
            break
        reason = None
        if segment.next_offset <= log_start_offset:
            reason = "log_start_offset"
        elif excess is not None and excess - segment.size_bytes >= 0:
            reason = "retention_bytes"
        elif retention_ms is not None and now_ms - retention_time_ms(segment) > retention_ms:
            reason = "retention_ms"
        if reason is None:
            break
        if excess is not None:
            excess -= segment.size_bytes
        chosen.append(segment.base_offset)
        reasons.append(reason)
    includes_active = bool(chosen) and len(chosen) == len(segments)
    return RetentionPlan(tuple(chosen), tuple(reasons), includes_active)
