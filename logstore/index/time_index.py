"""The time index (``.timeindex``): timestamp -> offset, for one segment.

File format (Kafka's ``TimeIndex``; every integer big-endian)::

    entry (12 bytes), repeated; no header, no checksum
      0  timestamp_ms     i64   the largest timestamp in the segment up to this entry
      8  relative_offset  u32   offset - base_offset of the batch that carries that timestamp

Entry ``(T, O)`` means: no record before offset ``O`` in this segment has a timestamp above
``T``. Entries are strictly increasing in timestamp and non-decreasing in offset. An append whose
timestamp is not above the last one is skipped (it adds nothing), so timestamps that go backwards
(CreateTime) never break the order.

The index is sparse. The segment appends together with the offset index (every
``index_interval_bytes``) the segment's max timestamp so far. :meth:`TimeIndex.floor` returns the
largest entry with timestamp <= the target. The caller takes its offset to the offset index and
scans batches from there. The last slot is kept in reserve (``is_full`` is ``entries >=
max_entries - 1``), so the segment's final max timestamp can always be written on roll and close
(``append(..., final=True)``).

After a crash: an untrimmed preallocated file (see :mod:`.mmap_array`) ends in zero entries.
``sanity_check()`` finds the first of them: a zero timestamp after a real entry is not
increasing. The index is a rebuildable cache with no checksum, so ``CorruptIndexError`` means
rebuild it from ``.log``.
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

from .mmap_array import I64_MAX, U32_MAX, MmapArray

__all__ = ["TimeIndex"]


class TimeIndex(MmapArray):
    """Sparse map from timestamps to offsets for one segment (same lifecycle as ``OffsetIndex``)."""

    ENTRY_BYTES = 12
    DTYPE = np.dtype([("timestamp_ms", ">i8"), ("relative_offset", ">u4")])
    MIN_ENTRIES = 2  # one ordinary slot plus the reserved final slot
    RESERVED_SLOTS = 1  # the final slot (roll, close)

    @property
    def is_full(self) -> bool:
        """True when only the reserved last slot is left (``final=True`` may still use it)."""
        return self.entries >= self.max_entries - self.RESERVED_SLOTS

    @property
    def last_entry(self) -> tuple[int, int]:
        """``(timestamp_ms, offset)`` of the last entry; ``(-1, base_offset)`` when empty."""
        count, (timestamps, relative) = self._view()
        if count == 0:
            return -1, self.base_offset
        return int(timestamps[count - 1]), self.base_offset + int(relative[count - 1])

    def append(self, timestamp_ms: int, offset: int, *, final: bool = False) -> bool:
        """Add ``(timestamp_ms, offset)`` if ``timestamp_ms`` is above the last timestamp.

        Returns whether it appended. Raises ``ValueError`` if ``offset`` is below the last entry's
        offset or does not fit (``offset - base_offset`` outside u32), if the index is not
        writable, or if it must append and is full. ``final=True`` (roll/close) may use the
        reserved last slot.
        """
        self._require_writable()
        count = self._snap[0]
        rel = offset - self.base_offset
        if not 0 <= rel <= U32_MAX:
            raise ValueError(
                f"offset {offset} does not fit index {self.path}: offset - base_offset "
                f"({offset} - {self.base_offset} = {rel}) must be in [0, {U32_MAX}]"
            )
        last_timestamp, last_rel = self._last if count else (-1, 0)
        if rel < last_rel:
            raise ValueError(
                f"offset {offset} is below the last indexed offset {self.base_offset + last_rel} ({self.path})"
            )
        if timestamp_ms <= last_timestamp:
            return False
        if timestamp_ms > I64_MAX:
            raise ValueError(f"timestamp_ms {timestamp_ms} does not fit int64")
        if count >= (self.max_entries if final else self.max_entries - 1):
            raise ValueError(
                f"time index {self.path} is full ({count} of {self.max_entries} entries, "
                f"{'final' if final else 'last slot reserved'})"
            )
        self._append_row(timestamp_ms, rel)
        return True

    def floor(self, timestamp_ms: int) -> tuple[int, int]:
        """``(timestamp_ms, offset)`` of the largest entry with timestamp <= ``timestamp_ms``.

        ``(-1, base_offset)`` if the index is empty or every entry is above the target: scan from
        the start of the segment.
        """
        count, (timestamps, relative) = self._view()
        if count == 0:
            return -1, self.base_offset
        timestamps = memoryview(timestamps)  # (bisect: see "Lookups" in mmap_array)
        slot = bisect_right(timestamps, timestamp_ms, 0, count) - 1
        if slot < 0:
            return -1, self.base_offset
        return timestamps[slot], self.base_offset + memoryview(relative)[slot]

    def entry(self, n: int) -> tuple[int, int]:
        """``(timestamp_ms, absolute offset)`` of slot ``n`` (``0 <= n < entries``, else ``IndexError``)."""
        n, (timestamps, relative) = self._slot(n)
        return int(timestamps[n]), self.base_offset + int(relative[n])

    def truncate_to(self, offset: int) -> None:
        """Drop every entry whose offset is >= ``offset`` (writable only)."""
        self._truncate_before_offset(offset, 1)

    def sanity_check(self) -> None:
        """Raise ``CorruptIndexError`` (path, byte position of the first bad entry) if the file
        length is not a multiple of 12, timestamps are not strictly increasing (this catches a
        zero tail), or offsets decrease."""
        self._check_length()
        count, (timestamps, relative) = self._view()
        self._check_order(timestamps[:count], "timestamp", relative[:count], "relative offset")

    def to_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies ``(timestamps, absolute offsets)`` as int64 arrays (for the dump tool)."""
        count, (timestamps, relative) = self._view()
        return timestamps[:count].copy(), relative[:count].astype(np.int64) + self.base_offset
