"""A segment: one ``<base_offset>.log`` with its ``.index`` and ``.timeindex``.

A segment owns exactly those three files (named by :mod:`logstore.files`) and nothing else.
The ``.log`` is a concatenation of record batches (:mod:`logstore.batch`); ``size`` is the number
of bytes of it that are complete and visible to readers. The two indexes are sparse caches over
the ``.log`` (:mod:`logstore.index`) and can always be rebuilt from it by :meth:`Segment.recover`.

Sparse rule (Kafka's ``index.interval.bytes``, with its KAFKA-806 fix): walking the batches of an
append, an index entry ``(last offset of the batch, position of the batch)`` is added before a batch
whenever more than ``index_interval_bytes`` were written since the previous entry. The first batch
of a segment is never indexed (a lookup below the first entry starts at position 0 anyway). Each
offset-index entry is paired with a time-index entry ``(largest timestamp so far, offset of the
batch that carried it)``, and sealing the segment appends a final time entry, as Kafka does.

Disk blocks are reserved ahead of the end of the active segment (``preallocate_bytes``,
:func:`logstore.files.reserve_blocks`: the file size does not change) and given back on seal,
close, truncation and recovery.

Concurrency: one writer at a time (the owning :class:`~logstore.log.Log` serialises appends,
truncations and rolls); any number of readers. A reader sees ``size`` only after the bytes below it
are written, so it never sees a partial batch. The file descriptor lives in a :class:`SegmentFile`
that closes itself when the last reference goes: a reader (or a :class:`FileSlice` being sent) that
holds a segment removed by retention or truncation keeps reading the bytes it was given.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from . import batch as batch_format
from .batch import HEADER, HEADER_SIZE, BatchHeader
from .config import LogConfig
from .errors import CorruptBatchError, CorruptIndexError, LogClosedError
from .files import (
    DELETED_SUFFIX,
    INDEX_SUFFIX,
    LOG_SUFFIX,
    TIMEINDEX_SUFFIX,
    release_reserved_blocks,
    reserve_blocks,
    segment_path,
)
from .index import OffsetIndex, TimeIndex

__all__ = ["Segment", "SegmentFile", "FileSlice"]

# Header fields needed to walk a .log: base_offset (q), batch_length (i) at 0..12, and
# last_offset_delta (i) at 23..27, max_timestamp (q) at 35..43.
_SCAN_CHUNK_BYTES = 64 * 1024
_BIG_BATCH_BYTES = 16 * 1024  # (iter_headers: past this, read header by header)
_RECOVER_CHUNK_BYTES = 16 * 1024 * 1024
#: largest batch_length any reader accepts as a sanity bound while walking a file (Kafka's
#: max.message.bytes may be raised per topic; we bound by the segment size instead).
_MIN_BATCH_LENGTH = HEADER_SIZE - 12


_BASE_OFFSET = struct.Struct(">q")
#: the least reserved ahead of the end of an active segment at a time (see Segment._reserve)
_RESERVE_MIN_BYTES = 64 * 1024
#: blocks past a recovered segment's end beyond this are a crashed writer's reservation
_RESERVE_SLACK_BYTES = 1024 * 1024
_IOV_MAX = 1024


def _pwritev_all(fd: int, buffers: list, position: int, total: int) -> None:
    """Write every buffer at ``position`` onwards, whatever partial writes the kernel makes."""
    if len(buffers) <= _IOV_MAX and os.pwritev(fd, buffers, position) == total:
        return  # the usual case: one call wrote everything
    # a short write (or more buffers than one call takes): write again from the start, piece by
    # piece (rewriting the same bytes at the same positions is harmless)
    written = 0
    start = 0
    while start < len(buffers):
        chunk = buffers[start : start + _IOV_MAX]
        n = os.pwritev(fd, chunk, position + written)
        written += n
        # drop fully written buffers; keep the unwritten rest of a partly written one
        while chunk and n >= len(chunk[0]):
            n -= len(chunk[0])
            chunk.pop(0)
            start += 1
        if n:
            buffers[start] = memoryview(buffers[start])[n:]
    if written != total:
        raise OSError(f"wrote {written} of {total} bytes")


def _has_reserved_blocks(fd: int, size: int) -> bool:
    """Whether ``fd`` holds clearly more disk blocks than its ``size`` needs (a reservation)."""
    try:
        return os.fstat(fd).st_blocks * 512 > size + _RESERVE_SLACK_BYTES
    except (OSError, AttributeError):  # (st_blocks: not on every platform)
        return False


class SegmentFile:
    """An open ``.log`` file descriptor that is closed when the last holder lets go of it.

    ``close()`` closes it at once (used when the whole log closes); otherwise the fd is closed
    when the object is garbage-collected, which in CPython is as soon as no segment, reader or
    :class:`FileSlice` refers to it any more.

    ``view(position, size)`` gives the server's mapped-send path a window on the file through
    one shared read-only memory map (made on first use, replaced by a longer one once the file
    has grown past it; an old map goes when its last view does).
    """

    __slots__ = ("path", "fd", "_map", "__weakref__")

    def __init__(self, path: str, *, create: bool):
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        self.path = path
        self._map: mmap.mmap | None = None
        self.fd = os.open(path, flags, 0o644)

    def view(self, position: int, size: int) -> memoryview | None:
        """Bytes ``[position, position + size)`` of the file as a read-only ``memoryview`` of a
        shared memory map, for ``socket.send`` to copy from the page cache; None if the file
        now ends before that range (it was truncated) or is closed.

        Only the kernel may read through such a view. A send that meets a page the file lost
        since (a truncation racing with it) fails with EFAULT; a *Python* read of that page
        would kill the process with SIGBUS, so nothing in logstore ever reads one.
        Raises ``OSError`` where the file cannot be mapped (address space, an exotic file
        system): the caller sends another way.
        """
        end = position + size
        mapped = self._map
        if mapped is None or len(mapped) < end:
            with _MAP_LOCK:
                mapped = self._map
                if mapped is None or len(mapped) < end:
                    fd = self.fd
                    length = os.fstat(fd).st_size if fd >= 0 else 0
                    if length < end:
                        return None
                    mapped = self._map = mmap.mmap(fd, length, access=mmap.ACCESS_READ)
        return memoryview(mapped)[position:end]

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        self._map = None  # (unmapped when the last view of it is released)
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


_MAP_LOCK = threading.Lock()  # (making a SegmentFile's map: once, and again when a read reaches past it)


@dataclass(frozen=True)
class FileSlice:
    """A byte range of a ``.log`` to be sent without copying: ``os.sendfile(sock, fd, position, size)``.

    The slice keeps the file open (``owner``) so retention deleting the segment meanwhile does not
    pull the bytes away. ``size`` is 0 for an empty read.
    """

    fd: int
    position: int
    size: int
    path: str = ""
    owner: object = field(default=None, repr=False, compare=False)

    def read(self) -> bytes:
        """The bytes of the slice, copied (for tests and the non-zero-copy path)."""
        return _pread_exact(self.fd, self.size, self.position, self.path)


def _pread_exact(fd: int, size: int, position: int, path: str) -> bytes:
    data = os.pread(fd, size, position)
    if len(data) == size:
        return data
    chunks = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, position + got)
        if not more:
            raise CorruptBatchError(
                f"file ended after {got} of {size} bytes", path=path, position=position + got
            )
        chunks.append(more)
        got += len(more)
    return b"".join(chunks)


class Segment:
    """One segment of a log; see the module docstring for the format and the rules.

    Create with :meth:`create` (a new, empty active segment) or :meth:`open` (existing files).
    Edges: an empty segment has ``size == 0`` and ``next_offset == base_offset``; sealed segments
    open lazily (no file is read or even opened until first use).
    """

    def __init__(self, directory: str, base_offset: int, config: LogConfig, *, active: bool):
        self.directory = directory
        self.base_offset = base_offset
        self.config = config
        self.log_path = segment_path(directory, base_offset, LOG_SUFFIX)
        self.index_path = segment_path(directory, base_offset, INDEX_SUFFIX)
        self.timeindex_path = segment_path(directory, base_offset, TIMEINDEX_SUFFIX)
        self._active = active
        self._file: SegmentFile | None = None
        self._offset_index: OffsetIndex | None = None
        self._time_index: TimeIndex | None = None
        self._size: int | None = None
        self._next_offset: int | None = None
        self._max_timestamp: tuple[int, int] | None = None  # (timestamp_ms, offset of its batch)
        self._bytes_since_index_entry = 0
        self._created_ms = int(time.time() * 1000)
        self._rolling_base_ms: int | None = None
        self._lazy_lock = threading.Lock()
        self._closed = False
        # blocks reserved past the end by this process (files.reserve_blocks): up to _reserved_end,
        # taken at _reserved_at (monotonic s) from _reserved_from; _reserve_ok False stops trying
        self._reserved_end = 0
        self._reserved_from = 0
        self._reserved_at = 0.0
        self._reserve_ok = config.preallocate_bytes > 0

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def create(cls, directory: str, base_offset: int, config: LogConfig) -> Segment:
        """A new empty active segment; stale files of the same name are replaced."""
        segment = cls(directory, base_offset, config, active=True)
        for path in (segment.log_path, segment.index_path, segment.timeindex_path):
            if os.path.exists(path):
                os.unlink(path)
        segment._file = SegmentFile(segment.log_path, create=True)
        segment._size = 0
        segment._next_offset = base_offset
        segment._max_timestamp = (-1, base_offset)
        segment._open_indexes_writable()
        return segment

    @classmethod
    def open(cls, directory: str, base_offset: int, config: LogConfig, *, active: bool) -> Segment:
        """An existing segment. Sealed ones are fully lazy; call :meth:`recover` or
        :meth:`load_active` before appending to an active one."""
        return cls(directory, base_offset, config, active=active)

    def _open_indexes_writable(self) -> None:
        max_bytes = self.config.segment_index_bytes
        self._offset_index = OffsetIndex(
            self.index_path, self.base_offset, max_index_bytes=max_bytes, writable=True
        )
        self._time_index = TimeIndex(
            self.timeindex_path, self.base_offset, max_index_bytes=max_bytes, writable=True
        )

    # --- lazily opened parts -------------------------------------------------------------------

    @property
    def file(self) -> SegmentFile:
        file = self._file
        if file is None:
            with self._lazy_lock:
                if self._closed:
                    raise LogClosedError(f"segment {self.log_path} is closed")
                if self._file is None:
                    self._file = SegmentFile(self.log_path, create=False)
                file = self._file
        return file

    @property
    def size(self) -> int:
        """Bytes of ``.log`` visible to readers (complete batches only)."""
        size = self._size
        if size is None:
            size = self._size = os.fstat(self.file.fd).st_size
        return size

    @property
    def offset_index(self) -> OffsetIndex:
        index = self._offset_index
        return index if index is not None else self._load_sealed_index("_offset_index", OffsetIndex, self.index_path)

    @property
    def time_index(self) -> TimeIndex:
        index = self._time_index
        return index if index is not None else self._load_sealed_index("_time_index", TimeIndex, self.timeindex_path)

    def _load_sealed_index(self, attribute: str, kind, path: str):
        """First use of a sealed segment's index: open it lazily read-only, checked (once, under
        the segment's lock, however many readers arrive together)."""
        with self._lazy_lock:
            index = getattr(self, attribute)
            if index is None:
                index = self._checked(kind(path, self.base_offset, writable=False))
                setattr(self, attribute, index)
            return index

    def _checked(self, index):
        """A sealed index passes its sanity check at first use, or is rebuilt from the ``.log``
        (an index is a cache: damage to it never reaches a reader)."""
        try:
            index.sanity_check()
            return index
        except CorruptIndexError:
            return self._rebuilt_index(type(index))

    def _rebuilt_index(self, kind):
        """Rebuild one sealed index from the ``.log`` into its file, then return it read-only."""
        max_bytes = self.config.segment_index_bytes
        for leftover in (self.index_path + ".rebuild", self.timeindex_path + ".rebuild"):
            if os.path.exists(leftover):
                os.unlink(leftover)
        offset_index = OffsetIndex(self.index_path + ".rebuild", self.base_offset, max_index_bytes=max_bytes)
        time_index = TimeIndex(self.timeindex_path + ".rebuild", self.base_offset, max_index_bytes=max_bytes)
        since = 0
        max_ts = (-1, self.base_offset)
        for position, header in self.iter_headers(0, self.size):
            if header.max_timestamp > max_ts[0]:  # (before the entry, as Kafka)
                max_ts = (header.max_timestamp, header.last_offset)
            if since > self.config.index_interval_bytes:
                offset_index.append(header.last_offset, position)
                time_index.append(max_ts[0], max_ts[1])
                since = 0
            since += header.size
        if max_ts[0] >= 0:
            time_index.append(max_ts[0], max_ts[1], final=True)
        target = self.index_path if kind is OffsetIndex else self.timeindex_path
        keep = offset_index if kind is OffsetIndex else time_index
        other = time_index if kind is OffsetIndex else offset_index
        keep.close(trim=True)
        other.close(trim=True)
        os.unlink(other.path)
        os.replace(keep.path, target)
        return kind(target, self.base_offset, writable=False)

    # --- metadata ------------------------------------------------------------------------------

    @property
    def is_active(self) -> bool:
        return self._active

    @property
    def next_offset(self) -> int:
        """One past the last offset stored in this segment (``base_offset`` if empty)."""
        if self._next_offset is None:
            self._next_offset = self._scan_next_offset()
        return self._next_offset

    def _scan_next_offset(self) -> int:
        last = self.base_offset
        found = False
        start = self.offset_index.floor(2**63 - 1)[1] if self.offset_index.entries else 0
        for _position, header in self.iter_headers(start, self.size):
            last = header.next_offset
            found = True
        return last if found else self.base_offset

    @property
    def max_timestamp(self) -> tuple[int, int]:
        """``(largest batch max timestamp, last offset of that batch)``; ``(-1, base_offset)`` if none."""
        if self._max_timestamp is None:
            peeked = None if self._time_index is not None else self._peek_last_time_entry()
            self._max_timestamp = peeked if peeked is not None else self.time_index.last_entry
        return self._max_timestamp

    def _peek_last_time_entry(self) -> tuple[int, int] | None:
        """The last entry of a sealed ``.timeindex`` (its final entry: the segment's max timestamp)
        read with one 12-byte pread instead of loading the whole index; ``None`` if the file does
        not look trimmed and sane (then the caller loads and checks the index)."""
        try:
            with open(self.timeindex_path, "rb") as f:
                length = os.fstat(f.fileno()).st_size
                if length == 0:
                    return (-1, self.base_offset)
                if length % 12:
                    return None
                data = os.pread(f.fileno(), 12, length - 12)
        except FileNotFoundError:
            return None
        timestamp_ms = int.from_bytes(data[:8], "big", signed=True)
        relative_offset = int.from_bytes(data[8:], "big")
        if timestamp_ms < 0 or (relative_offset == 0 and length > 12):
            return None
        return (timestamp_ms, self.base_offset + relative_offset)

    @property
    def largest_timestamp_ms(self) -> int:
        """The largest record timestamp, or the ``.log`` mtime when no batch carries one."""
        ts = self.max_timestamp[0]
        if ts >= 0:
            return ts
        return int(os.stat(self.log_path).st_mtime * 1000)

    def rolling_base_ms(self) -> int | None:
        """The time this segment's age (``segment_ms``) is counted from: when its first batch was
        appended in this process, else the first batch's max timestamp; ``None`` while empty."""
        if self.size == 0:
            return None
        if self._rolling_base_ms is None:
            header = batch_format.unpack_header(_pread_exact(self.file.fd, HEADER_SIZE, 0, self.log_path),
                                                path=self.log_path)
            self._rolling_base_ms = header.max_timestamp if header.max_timestamp >= 0 else self._created_ms
        return self._rolling_base_ms

    def can_append(self, first_offset: int, last_offset: int, incoming_bytes: int) -> bool:
        """False if this batch must go to a new segment: size, index capacity, relative overflow."""
        size = self.size
        if size and size + incoming_bytes > self.config.segment_bytes:
            return False
        if last_offset - self.base_offset > 2**31 - 1 or first_offset < self.base_offset:
            return False
        if self._offset_index is not None and self._offset_index.is_full:
            return False
        if self._time_index is not None and self._time_index.is_full:
            return False
        return True

    # --- writing (the log's writer lock is held) ----------------------------------------------

    def append(self, data, headers: list[tuple[int, BatchHeader]], now_ms: int | None = None) -> None:
        """Write validated batches at the end; ``headers`` are ``(position in data, header)`` with
        the base offsets the batches must get. Each batch's first 8 bytes (its base offset,
        outside the CRC) are replaced on the way out, with one ``pwritev`` and no copy of ``data``.

        The bytes are written before ``size`` moves, so readers never see them half written.
        Index entries for the new batches are stored just before the write (the write leaves the
        CPU caches cold: bookkeeping after it costs about three times as much): readers bound
        every lookup by ``log_end_offset``, which has not moved, so no reader follows them yet.
        If the write fails they are removed again and nothing is published.
        """
        position = self.size
        view = memoryview(data)
        total = len(view)
        pack = _BASE_OFFSET.pack
        if len(headers) == 1:
            relative_position, header = headers[0]
            end = relative_position + header.batch_length + 12
            buffers = [pack(header.base_offset), view[relative_position + 8 : end]]
        else:
            buffers = []
            for relative_position, header in headers:
                buffers.append(pack(header.base_offset))
                buffers.append(view[relative_position + 8 : relative_position + header.batch_length + 12])
        if position + total > self._reserved_end and self._reserve_ok:
            self._reserve(position, total)
        offset_index, time_index = self._offset_index, self._time_index
        entries = None  # index entry counts before this append, once an entry is added
        interval = self.config.index_interval_bytes
        since = self._bytes_since_index_entry
        max_ts, max_ts_offset = self._max_timestamp or self.max_timestamp
        for relative_position, header in headers:
            last_offset = header.base_offset + header.last_offset_delta
            if header.max_timestamp > max_ts:  # (the entry below includes this batch, as Kafka's)
                max_ts, max_ts_offset = header.max_timestamp, last_offset
            if since > interval:
                if entries is None:
                    entries = (offset_index.entries, time_index.entries)
                offset_index.append(last_offset, position + relative_position)
                time_index.append(max_ts, max_ts_offset)
                since = 0
            since += header.batch_length + 12
        first_batch_ms = None
        if position == 0:
            first_batch_ms = int(time.time() * 1000) if now_ms is None else now_ms
        self._write(buffers, position, total, entries, since, (max_ts, max_ts_offset), last_offset + 1, first_batch_ms)

    def _write(self, buffers: list, position: int, total: int, entries: tuple[int, int] | None, since: int,
               max_timestamp: tuple[int, int], next_offset: int, first_batch_ms: int | None) -> None:
        """The end of both appends: write ``buffers`` (``total`` bytes) at ``position``, the end;
        then set the segment's state and publish the new size (``first_batch_ms``: the time of
        a first batch, which the segment's age counts from). If the write fails, the index
        entries added for it (counts before them in ``entries``; None: none added) are removed
        and nothing changes."""
        try:
            _pwritev_all(self.file.fd, buffers, position, total)
        except BaseException:
            if entries is not None:
                self._offset_index.truncate_entries(entries[0])
                self._time_index.truncate_entries(entries[1])
            raise
        self._bytes_since_index_entry = since
        self._max_timestamp = max_timestamp
        if first_batch_ms is not None and self._rolling_base_ms is None:
            self._rolling_base_ms = first_batch_ms
        self._next_offset = next_offset
        self._size = position + total  # publish: readers may now read up to here

    def append_one(self, view, base_offset: int, last_offset_delta: int, max_timestamp: int,
                   now_ms: int, max_age_ms: int) -> bool:
        """:meth:`append` of exactly one validated batch (``view`` holds its bytes and nothing
        else) that must get ``base_offset``, in fewer steps: a producer's hot path. Returns
        False, having changed nothing, when the batch must go to a new segment (size, age
        ``max_age_ms``, relative offset, a full index) or this segment's state is not loaded;
        the caller then rolls if needed and calls :meth:`append`, which decides exactly.
        """
        position = self._size
        total = len(view)
        last_offset = base_offset + last_offset_delta
        rolling_base_ms = self._rolling_base_ms
        offset_index, time_index = self._offset_index, self._time_index
        max_ts = self._max_timestamp
        if (
            position is None
            or max_ts is None
            or offset_index is None
            or time_index is None
            or position + total > self.config.segment_bytes
            or (position and (rolling_base_ms is None or now_ms - rolling_base_ms > max_age_ms))
            or base_offset < self.base_offset
            or last_offset - self.base_offset > 2**31 - 1
        ):
            return False
        # (is_full of both, from counts read once: they also undo a failed write)
        entries = (offset_index.entries, time_index.entries)
        if (entries[0] >= offset_index.max_entries - offset_index.RESERVED_SLOTS
                or entries[1] >= time_index.max_entries - time_index.RESERVED_SLOTS):
            return False
        if position + total > self._reserved_end and self._reserve_ok:
            self._reserve(position, total)
        max_ts, max_ts_offset = max_ts
        if max_timestamp > max_ts:
            max_ts, max_ts_offset = max_timestamp, last_offset
        since = self._bytes_since_index_entry
        if since > self.config.index_interval_bytes:  # (before the write: see append)
            offset_index.append(last_offset, position)
            time_index.append(max_ts, max_ts_offset)
            since = 0
        else:
            entries = None
        self._write([_BASE_OFFSET.pack(base_offset), view[8:]], position, total, entries, since + total,
                    (max_ts, max_ts_offset), last_offset + 1, now_ms if position == 0 else None)
        return True

    def _reserve(self, position: int, incoming_bytes: int) -> None:
        """Reserve disk blocks from ``position`` (the end) for this write and about one second of
        appends after it at the rate seen since the previous reservation, between 64 KiB and
        ``preallocate_bytes``, never past ``segment_bytes`` (see ``files.reserve_blocks``). The
        file size does not change. Where reserving fails it is not tried again for this segment.
        """
        now = time.monotonic()
        ahead = _RESERVE_MIN_BYTES
        if self._reserved_end:
            rate = (position + incoming_bytes - self._reserved_from) / max(now - self._reserved_at, 1e-6)
            ahead = min(max(int(rate), ahead), self.config.preallocate_bytes)
        length = max(incoming_bytes, min(ahead, self.config.segment_bytes - position))
        if reserve_blocks(self.file.fd, position, length):
            self._reserved_end, self._reserved_from, self._reserved_at = position + length, position, now
        else:
            self._reserve_ok = False

    def _release_reserved(self) -> None:
        """Free blocks reserved past the end (on seal, close and truncation)."""
        if self._reserved_end > (self._size or 0) and self._file is not None:
            release_reserved_blocks(self._file.fd, self._size or 0)
        self._reserved_end = 0

    def seal(self) -> None:
        """The segment stops being active: final time entry, indexes trimmed to their used size,
        reserved blocks past the end released."""
        if not self._active:
            return
        self._release_reserved()
        max_ts, offset = self.max_timestamp
        if max_ts >= 0:
            self.time_index.append(max_ts, offset, final=True)
        self.offset_index.trim()
        self.time_index.trim()
        self._active = False

    def flush(self) -> None:
        """fsync the ``.log`` and flush both indexes."""
        os.fsync(self.file.fd)
        if self._offset_index is not None:
            self._offset_index.flush()
        if self._time_index is not None:
            self._time_index.flush()

    def truncate_to_position(self, position: int, next_offset: int) -> None:
        """Drop every byte of ``.log`` at and after ``position`` (the start of the batch holding
        ``next_offset``, or the end) and the index entries that point there; the segment becomes
        writable again (active). Reads at most one index interval to recompute the tail state."""
        if self._offset_index is None or not self._active:
            self._reopen_writable()
        self._offset_index.truncate_to(next_offset)
        self._time_index.truncate_to(next_offset)
        start = self._offset_index.floor(next_offset)[1]
        max_ts = self._time_index.last_entry
        for _position, header in self.iter_headers(start, position):
            if header.max_timestamp > max_ts[0]:
                max_ts = (header.max_timestamp, header.last_offset)
        self._size = min(self.size, position)
        os.ftruncate(self.file.fd, position)  # (also frees any blocks reserved past the end)
        self._reserved_end = 0
        self._next_offset = next_offset if position else self.base_offset
        self._max_timestamp = max_ts
        self._bytes_since_index_entry = position - start
        if position == 0:
            self._rolling_base_ms = None

    def _reopen_writable(self) -> None:
        for index in (self._offset_index, self._time_index):
            if index is not None:
                index.close(trim=True)
        self._open_indexes_writable()
        self._active = True

    def load_active(self) -> bool:
        """Open an active segment after a clean shutdown: writable indexes, next offset and max
        timestamp from the last index entry onwards (reads at most one index interval).

        Returns False, and changes nothing on disk, if the indexes fail their sanity check or the
        batches after the last index entry do not end exactly at the end of the file; the caller
        then runs :meth:`recover`.
        """
        self._open_indexes_writable()
        try:
            self._offset_index.sanity_check()
            self._time_index.sanity_check()
        except CorruptIndexError:
            return False
        start = self._offset_index.floor(2**63 - 1)[1] if self._offset_index.entries else 0
        max_ts = self._time_index.last_entry
        next_offset = self.base_offset
        end = start
        try:
            for position, header in self.iter_headers(start, self.size):
                next_offset = header.next_offset
                end = position + header.size
                if header.max_timestamp > max_ts[0]:
                    max_ts = (header.max_timestamp, header.last_offset)
        except CorruptBatchError:
            return False
        if end != self.size:
            return False
        self._next_offset = next_offset
        self._max_timestamp = max_ts
        self._bytes_since_index_entry = self.size - start
        self._active = True
        return True

    def recover(self, *, max_batch_bytes: int, contiguous_from: int | None = None) -> int:
        """Validate every batch from position 0, rebuild both indexes, and truncate the ``.log`` at
        the first incomplete or invalid batch. Returns the number of bytes truncated (0 if clean).

        The base offset is outside the CRC, so a damaged one is caught by plausibility instead:
        offsets must grow, and from ``contiguous_from`` on (the recovery point, for the last
        segment: everything past it came from appends, which are contiguous; compaction gaps exist
        only in fsynced data below it) each batch must start exactly where the previous one ended.
        Reads the file in large chunks; costs one CRC-32C pass over the segment.
        """
        self._active = True
        for index in (self._offset_index, self._time_index):
            if index is not None:
                index.close(trim=False)
        self._open_indexes_writable()
        self._offset_index.reset()
        self._time_index.reset()
        fd = self.file.fd
        file_size = os.fstat(fd).st_size
        self._size = file_size
        valid_end = 0
        since = 0
        max_ts = (-1, self.base_offset)
        next_offset = self.base_offset
        interval = self.config.index_interval_bytes
        offset_index = self._offset_index
        time_index = self._time_index
        for position, header in self._iter_valid_batches(fd, file_size, max_batch_bytes):
            if header.base_offset < next_offset or header.last_offset_delta < 0 or (
                header.last_offset - self.base_offset > 2**31 - 1
            ):
                break  # offsets must grow within a segment: anything else is damage
            if contiguous_from is not None and next_offset >= contiguous_from and header.base_offset != next_offset:
                break
            if since > interval and not offset_index.can_append(header.last_offset):
                break
            if header.max_timestamp > max_ts[0]:  # (before the entry, as Kafka)
                max_ts = (header.max_timestamp, header.last_offset)
            if since > interval:
                offset_index.append(header.last_offset, position)
                time_index.append(max_ts[0], max_ts[1])
                since = 0
            since += header.size
            next_offset = header.next_offset
            valid_end = position + header.size
        truncated = file_size - valid_end
        if truncated or _has_reserved_blocks(fd, valid_end):
            os.ftruncate(fd, valid_end)  # a torn tail, or blocks a crashed writer had reserved
        self._reserved_end = 0
        self._size = valid_end
        self._next_offset = next_offset
        self._max_timestamp = max_ts
        self._bytes_since_index_entry = since
        self._rolling_base_ms = None
        return truncated

    def _iter_valid_batches(self, fd: int, file_size: int, max_batch_bytes: int):
        """(position, header) of each valid batch from 0; stops at the first torn or bad one.

        Reads into one reused buffer (a fresh 16 MiB ``bytes`` per read would cost page faults
        that dominate the CRC pass)."""
        buffer = bytearray(min(_RECOVER_CHUNK_BYTES, max(file_size, HEADER_SIZE)))
        limit = max(max_batch_bytes, self.config.segment_bytes)
        position = 0
        while position < file_size:
            got = os.preadv(fd, [buffer], position)
            view = memoryview(buffer)[:got]
            at = 0
            while True:
                remaining = got - at
                if remaining < HEADER_SIZE:
                    break
                batch_length = int.from_bytes(view[at + 8 : at + 12], "big", signed=True)
                batch_size = 12 + batch_length
                if batch_length < _MIN_BATCH_LENGTH or batch_size > limit:
                    return
                if batch_size > remaining:
                    if position + at + batch_size > file_size:
                        return  # torn tail
                    if at == 0:  # one batch larger than the buffer: grow it and read again
                        view.release()
                        buffer = bytearray(batch_size)
                        got = os.preadv(fd, [buffer], position)
                        view = memoryview(buffer)[:got]
                        continue
                    break
                try:
                    header = batch_format.validate(view, at, path=self.log_path)
                except CorruptBatchError:
                    return
                yield position + at, header
                at += batch_size
            view.release()
            if at == 0:
                return
            position += at

    # --- reading (no lock needed) --------------------------------------------------------------

    def iter_headers(self, start: int, end: int, *, first_window: int = _SCAN_CHUNK_BYTES) -> Iterator[tuple[int, BatchHeader]]:
        """Walk batch headers from ``start`` (a batch boundary) up to ``end`` without reading the
        record bytes. Stops at a batch that would run past ``end``. A header that is not a batch
        raises ``CorruptBatchError`` naming this file and the position.

        Reads windows of ``first_window`` bytes, doubling up to 64 KiB: a lookup that expects its
        batch within one index interval reads little; a long walk reads in large steps. After a
        batch of 16 KiB or more the next read is just the next header: big batches are walked
        without reading their records."""
        fd = self.file.fd
        position = start
        window_bytes = max(HEADER_SIZE, first_window)
        header = None
        while position + HEADER_SIZE <= end:
            if header is not None and header.batch_length >= _BIG_BATCH_BYTES:
                window_bytes = HEADER_SIZE
            window = os.pread(fd, min(window_bytes, end - position), position)
            window_bytes = min(window_bytes * 2, _SCAN_CHUNK_BYTES)
            at = 0
            while at + HEADER_SIZE <= len(window):
                header = BatchHeader._make(HEADER.unpack_from(window, at))
                if header.magic != batch_format.MAGIC or header.batch_length < _MIN_BATCH_LENGTH:
                    raise CorruptBatchError(
                        f"not a record batch (magic {header.magic}, batch_length {header.batch_length})",
                        path=self.log_path,
                        position=position + at,
                    )
                if position + at + header.size > end:
                    return
                yield position + at, header
                at += header.size
            if at == 0:
                return
            position += at

    def find_batch(self, offset: int, end: int | None = None) -> tuple[int, BatchHeader] | None:
        """``(position, header)`` of the first batch whose last offset is >= ``offset``, or ``None``
        if every batch of this segment (below ``end``) ends before it."""
        end = self.size if end is None else end
        (_floor_offset, start), following = self.offset_index.bracket(offset)
        if start > end:
            start = 0
        elif following is not None and following[1] + HEADER_SIZE <= end:
            # One header instead of a walk from the floor entry: when the batch of the next entry
            # starts at or below ``offset``, every batch between ends below it (offsets grow).
            # A header that does not match its entry (a damaged index) falls back to the walk.
            next_offset, next_position = following
            try:
                header = self.header_at(next_position, end)
            except CorruptBatchError:
                header = None
            if header is not None and header.last_offset == next_offset and header.base_offset <= offset:
                return next_position, header
        try:
            return self._scan_for(offset, start, end)
        except CorruptBatchError:
            if start == 0 or self._active:
                raise
        # A sealed index entry that passed its sanity check still pointed at no batch: the index
        # is damaged in a way ordering cannot show. It is a cache: rebuild it and look again.
        with self._lazy_lock:
            self._offset_index = self._rebuilt_index(OffsetIndex)
        return self._scan_for(offset, self.offset_index.floor(offset)[1], end)

    def header_at(self, position: int, end: int) -> BatchHeader | None:
        """The header of the batch at ``position`` (one 61-byte read), or None if that batch does
        not end by ``end``. Bytes that are not a batch header raise ``CorruptBatchError``."""
        if position + HEADER_SIZE > end:
            return None
        data = os.pread(self.file.fd, HEADER_SIZE, position)
        if len(data) < HEADER_SIZE:
            return None
        header = BatchHeader._make(HEADER.unpack_from(data))
        if header.magic != batch_format.MAGIC or header.batch_length < _MIN_BATCH_LENGTH:
            raise CorruptBatchError(
                f"not a record batch (magic {header.magic}, batch_length {header.batch_length})",
                path=self.log_path,
                position=position,
            )
        return header if position + header.size <= end else None

    def _scan_for(self, offset: int, start: int, end: int) -> tuple[int, BatchHeader] | None:
        # the batch sought starts within about one index interval of the entry's position
        first_window = min(_SCAN_CHUNK_BYTES, self.config.index_interval_bytes + 2 * HEADER_SIZE)
        for position, header in self.iter_headers(start, end, first_window=first_window):
            if header.last_offset >= offset:
                return position, header
        return None

    def read(self, position: int, size: int) -> bytes:
        return _pread_exact(self.file.fd, size, position, self.log_path)

    def slice(self, position: int, size: int) -> FileSlice:
        file = self.file
        return FileSlice(file.fd, position, size, self.log_path, file)

    def find_timestamp(self, timestamp_ms: int, start_offset: int) -> tuple[int, BatchHeader] | None:
        """``(position, header)`` of the first batch at or after ``start_offset`` whose max timestamp
        is >= ``timestamp_ms``, starting from the time index's floor entry."""
        _ts, indexed_offset = self.time_index.floor(timestamp_ms)
        start = self.offset_index.floor(max(indexed_offset, start_offset))[1]
        for position, header in self.iter_headers(start, self.size):
            if header.max_timestamp >= timestamp_ms and header.last_offset >= start_offset:
                return position, header
        return None

    # --- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Seal-trim the indexes and let go of the file; idempotent.

        The fd closes now unless a :class:`FileSlice` (being sent by the server, say) still
        holds it; then it closes when that slice goes, so its number is never reused under it.
        """
        with self._lazy_lock:
            self._closed = True
        if self._active:
            try:
                self._release_reserved()
            except OSError:  # (the bytes are all there; only the reservation stays)
                pass
            max_ts, offset = self.max_timestamp
            if max_ts >= 0 and self._time_index is not None:
                try:
                    self._time_index.append(max_ts, offset, final=True)
                except ValueError:
                    pass
        for index in (self._offset_index, self._time_index):
            if index is not None and not index.closed:
                # trimmed and fsynced before the log writes its clean-shutdown marker, so a clean
                # reopen never finds a preallocated zero tail (Kafka's "corrupt index" after a crash)
                index.trim()
                index.flush()
                index.close(trim=False)
        self._file = None  # the SegmentFile closes itself when its last holder lets go

    @property
    def last_modified_ms(self) -> int:
        """When the ``.log`` was last written (its mtime), in milliseconds."""
        return int(os.fstat(self.file.fd).st_mtime * 1000)

    def mark_deleted(self) -> None:
        """Rename the three files ``*.deleted`` (the first step of deleting a segment).

        The ``.log`` is opened first if it was not, so anyone holding this segment or a slice
        of it keeps reading; the paths move with the files so lazy index loads still work.
        """
        self.file  # noqa: B018 - open the fd before the name goes away
        for attribute in ("log_path", "index_path", "timeindex_path"):
            path = getattr(self, attribute)
            new_path = path + DELETED_SUFFIX
            index = {"index_path": self._offset_index, "timeindex_path": self._time_index}.get(attribute)
            try:
                if index is not None:
                    index.rename(new_path)
                else:
                    os.replace(path, new_path)
            except FileNotFoundError:
                pass
            setattr(self, attribute, new_path)
        self._active = False

    def delete_files(self) -> None:
        """Unlink the three files (missing ones are fine). Nothing is closed here: a reader still
        holding this segment or a slice of it keeps reading (POSIX keeps unlinked files readable);
        the fd and any index mmap go away with the last reference."""
        for path in (self.log_path, self.index_path, self.timeindex_path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def __repr__(self) -> str:
        state = "active" if self._active else "sealed"
        return f"Segment(base_offset={self.base_offset}, {state}, path={self.log_path!r})"
