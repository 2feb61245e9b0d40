"""Removing and replacing old segments: the mechanism behind retention and compaction.

Part of :class:`logstore.log.Log`, in its own module because it is its own concept: the
policies (:mod:`logstore.retention`, compaction) are pure functions that return plans; these
methods carry a plan out under the log's writer lock, with the file renames ordered so that a
crash at any point leaves, after reopen, the log from before or the log from after.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from .errors import OffsetOutOfRangeError
from .files import (
    CLEANED_SUFFIX,
    INDEX_SUFFIX,
    LOG_SUFFIX,
    SWAP_SUFFIX,
    TIMEINDEX_SUFFIX,
    fsync_dir,
    segment_path,
)
from .recovery import Checkpoint, write_checkpoint
from .retention import SegmentInfo
from .segment import Segment

__all__ = ["LogCleanup"]


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class LogCleanup:
    """Segment deletion and replacement for :class:`~logstore.log.Log` (a mixin)."""

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

    def replace_segments(self, old: Sequence[Segment], new_base_offsets: Sequence[int], *, now_ms: int | None = None) -> bool:
        """Swap sealed segments ``old`` (consecutive, oldest first, none active) for rewritten ones
        (compaction). The new segments' files must already sit in this directory as
        ``<base>.log.cleaned`` / ``.index.cleaned`` / ``.timeindex.cleaned``, fsynced, covering
        the same offsets (with gaps) as ``old``.

        Crash safety (Kafka's swap protocol; :mod:`logstore.recovery` finishes or undoes each
        step at open): rename every ``.cleaned`` to ``.swap`` (newest first) and fsync the
        directory -- from here the rewrite counts as done; rename the old files ``.deleted``;
        rename the ``.swap`` files to their final names; fsync the directory. A crash before the
        first fsync leaves the old log, after it the new one: never a mix.

        Returns False (and removes the ``.cleaned`` files) if ``old`` are no longer segments of
        this log (retention or truncation got there first). Readers holding an old segment keep
        reading it; its files are unlinked ``file_delete_delay_ms`` later.
        """
        now_ms = self._clock_ms() if now_ms is None else now_ms
        directory = self.directory
        suffixes = (LOG_SUFFIX, INDEX_SUFFIX, TIMEINDEX_SUFFIX)
        with self._lock:
            self._check_open()
            segments = self._segments
            try:
                first = next(i for i, s in enumerate(segments) if s is old[0])
            except (StopIteration, IndexError):
                first = -1
            if (
                first < 0
                or segments[first : first + len(old)] != list(old)
                or first + len(old) >= len(segments)  # the active segment is never replaced
            ):
                for base in new_base_offsets:
                    for suffix in suffixes:
                        _unlink_quietly(segment_path(directory, base, suffix) + CLEANED_SUFFIX)
                return False
            for base in sorted(new_base_offsets, reverse=True):
                for suffix in suffixes:
                    source = segment_path(directory, base, suffix) + CLEANED_SUFFIX
                    if os.path.exists(source):
                        os.replace(source, segment_path(directory, base, suffix) + SWAP_SUFFIX)
            fsync_dir(directory)
            for segment in old:
                segment.mark_deleted()
            for base in new_base_offsets:
                for suffix in suffixes:
                    source = segment_path(directory, base, suffix) + SWAP_SUFFIX
                    if os.path.exists(source):
                        os.replace(source, segment_path(directory, base, suffix))
            fsync_dir(directory)
            fresh = [Segment.open(directory, base, self.config, active=False) for base in new_base_offsets]
            self._segments = segments[:first] + fresh + segments[first + len(old) :]
            self._bases = [s.base_offset for s in self._segments]
            self._flushed_segments = min(self._flushed_segments, len(self._segments) - 1)
            deadline = now_ms + self.config.file_delete_delay_ms
            self._pending_deletes.extend((deadline, segment) for segment in old)
            return True

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

