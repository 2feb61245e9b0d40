"""The offset index (``.index``): offset -> byte position in the segment's ``.log``.

File format (Kafka's ``OffsetIndex``; every integer big-endian)::

    entry (8 bytes), repeated; no header, no checksum
      0  relative_offset  u32   offset - base_offset
      4  position         u32   byte position in .log of the batch whose *last* offset is that offset

Entry ``(O, P)`` means: the batch that starts at byte ``P`` of ``.log`` ends at offset ``O``.
Entries are strictly increasing in offset and non-decreasing in position.

The index is sparse. The segment adds an entry only after ``index_interval_bytes`` of ``.log``
have been written since the last entry. A lookup therefore returns a place to start scanning
batch headers, not the batch itself: :meth:`OffsetIndex.floor` returns the largest entry whose
offset is <= the target, and the caller scans forward from its position.

After a crash: the file of the active segment is preallocated (see :mod:`.mmap_array`), so an
untrimmed file ends in zero entries, and Kafka counts them as real. ``sanity_check()`` finds the
first of them: a zero relative offset after a real entry breaks the strict ordering. The index is
a cache with no checksum, and a damaged one is rebuilt from ``.log`` (``Segment.recover()``), so
``CorruptIndexError`` is a signal to rebuild, not data loss.

Kafka reads both fields as *signed* int32. Positions stay below 2**31 because segments do
(``config.MAX_SEGMENT_BYTES``). Relative offsets are accepted up to the u32 limit.
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

from .mmap_array import U32_MAX, MmapArray

__all__ = ["OffsetIndex"]


class OffsetIndex(MmapArray):
    """Sparse map from offsets to ``.log`` positions for one segment.

    ``writable=True`` opens (creating if missing) and preallocates the file and maps it.
    ``writable=False`` is lazy: nothing is read until the first lookup, and a missing file reads
    as empty. One writer and any number of concurrent lock-free readers (see :mod:`.mmap_array`).
    """

    ENTRY_BYTES = 8
    DTYPE = np.dtype([("relative_offset", ">u4"), ("position", ">u4")])

    @property
    def is_full(self) -> bool:
        return self.entries >= self.max_entries - self.RESERVED_SLOTS

    @property
    def last_offset(self) -> int:
        """Offset of the last entry; ``base_offset`` when empty."""
        count, (relative, _) = self._view()
        return self.base_offset + int(relative[count - 1]) if count else self.base_offset

    def can_append(self, offset: int) -> bool:
        """Whether ``offset`` fits this segment (relative offset fits u32) and there is room."""
        return 0 <= offset - self.base_offset <= U32_MAX and self.writable and not self.is_full

    def append(self, offset: int, position: int) -> None:
        """Add entry ``(offset, position)``: the batch at ``position`` ends at ``offset``.

        Raises ``ValueError`` if the index is full or not writable, if ``offset`` does not fit
        (``offset - base_offset`` outside u32) or is not above ``last_offset``, or if ``position``
        is outside u32 or below the last position.
        """
        self._require_writable()
        count = self._snap[0]
        rel = offset - self.base_offset
        if not 0 <= rel <= U32_MAX:
            raise ValueError(
                f"offset {offset} does not fit index {self.path}: offset - base_offset "
                f"({offset} - {self.base_offset} = {rel}) must be in [0, {U32_MAX}]"
            )
        if not 0 <= position <= U32_MAX:
            raise ValueError(f"position {position} must be in [0, {U32_MAX}]")
        if count:
            last_relative, last_position = self._last
            last_offset = self.base_offset + last_relative
            if offset <= last_offset:
                raise ValueError(
                    f"offset {offset} must be greater than the last indexed offset {last_offset} ({self.path})"
                )
            if position < last_position:
                raise ValueError(
                    f"position {position} must not be below the last indexed position {last_position} ({self.path})"
                )
        if count >= self.max_entries:
            raise ValueError(f"index {self.path} is full ({self.max_entries} entries)")
        self._append_row(rel, position)

    def floor(self, offset: int) -> tuple[int, int]:
        """``(offset, position)`` of the largest entry with entry offset <= ``offset``.

        ``(base_offset, 0)`` if the index is empty or every entry is above ``offset``: scan from
        the start of the segment.
        """
        return self.bracket(offset)[0]

    def bracket(self, offset: int) -> tuple[tuple[int, int], tuple[int, int] | None]:
        """``(floor, following)``: ``floor(offset)``, and ``(offset, position)`` of the first
        entry above ``offset`` (None if there is none). The batch holding ``offset`` starts at or
        after the floor's position and at or before the following entry's."""
        count, (relative, positions) = self._view()
        target = offset - self.base_offset
        relative, positions = memoryview(relative), memoryview(positions)  # (bisect: see "Lookups" in mmap_array)
        slot = bisect_right(relative, target, 0, count) if count and target >= 0 else 0
        base = self.base_offset
        floor = (base, 0) if slot == 0 else (base + relative[slot - 1], positions[slot - 1])
        following = (base + relative[slot], positions[slot]) if slot < count else None
        return floor, following

    def floor_within(self, offset: int, position: int) -> tuple[int, int] | None:
        """``(offset, position)`` of the last entry with entry offset <= ``offset`` and entry
        position <= ``position`` (both columns only grow, so it is the earlier of the two
        floors); None if there is none. For finding where a slice of at most so many bytes ends
        without walking every batch header before it."""
        count, (relative, positions) = self._view()
        target = offset - self.base_offset
        if count == 0 or target < 0 or position < 0:
            return None
        relative, positions = memoryview(relative), memoryview(positions)
        slot = min(bisect_right(relative, target, 0, count), bisect_right(positions, position, 0, count)) - 1
        if slot < 0:
            return None
        return self.base_offset + relative[slot], positions[slot]

    def entry(self, n: int) -> tuple[int, int]:
        """Absolute ``(offset, position)`` of slot ``n`` (``0 <= n < entries``, else ``IndexError``)."""
        n, (relative, positions) = self._slot(n)
        return self.base_offset + int(relative[n]), int(positions[n])

    def truncate_to(self, offset: int) -> None:
        """Drop every entry whose offset is >= ``offset`` (writable only)."""
        self._truncate_before_offset(offset, 0)

    def sanity_check(self) -> None:
        """Raise ``CorruptIndexError`` (path, byte position of the first bad entry) if the file
        length is not a multiple of 8, relative offsets are not strictly increasing (this catches
        a zero tail), or positions decrease.

        Kafka also checks "last offset < base offset". With unsigned relative offsets that cannot
        happen, so there is nothing to check.
        """
        self._check_length()
        count, (relative, positions) = self._view()
        self._check_order(relative[:count], "relative offset", positions[:count], "position")

    def to_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies ``(absolute offsets, positions)`` as int64 arrays (for the dump tool)."""
        count, (relative, positions) = self._view()
        return relative[:count].astype(np.int64) + self.base_offset, positions[:count].astype(np.int64)
