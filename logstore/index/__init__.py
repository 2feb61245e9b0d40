"""Sparse offset and time indexes over a segment's ``.log``.

Both are Kafka-compatible files (big-endian, fixed-width entries) and rebuildable caches of the
``.log``; the formats are specified at the top of :mod:`.offset_index` and :mod:`.time_index`, the
shared file/mmap/mirror machinery in :mod:`.mmap_array`.
"""

from .offset_index import OffsetIndex
from .time_index import TimeIndex

__all__ = ["OffsetIndex", "TimeIndex"]
