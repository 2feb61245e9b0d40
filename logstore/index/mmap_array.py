"""Fixed-width index entries in a file, mirrored in native-endian numpy arrays.

This is the machinery shared by :mod:`.offset_index` and :mod:`.time_index`; each of those
modules specifies its own entry layout. What they have in common:

* An index file is a plain sequence of fixed-width, big-endian entries: no header, no count, no
  checksum. Like Kafka, a file found on disk is taken as entirely valid: ``entries = file length
  // entry size``. A trailing partial entry (a file length that is not a multiple of the entry size)
  is remembered and reported by ``sanity_check()``.
* The index is a cache of the ``.log`` file. Whatever a crash leaves can be detected by the
  subclass's ``sanity_check()`` and is answered by rebuilding from ``.log``
  (``Segment.recover()``); nothing here tries to repair a file.

Two ways to open an index
-------------------------
*Writable* (the active segment's): the file is created if missing, grown to its capacity
(``max_index_bytes`` rounded down to a whole number of entries) and mapped with ``mmap``. An
append is a memory write and never a system call: it goes to the native mirror (below), and the
rows reach the map ``STORE_EVERY_ENTRIES`` at a time, and on ``flush()``, ``trim()`` and
``close()``. (One store into the map right after a 1 MiB write cost about 4% of a 1 MiB append;
a block of rows costs that once.) So the *file* of a writable index may lag its entries by fewer
than ``STORE_EVERY_ENTRIES`` rows until one of those calls: lookups never read the file, a crash
loses nothing (recovery rebuilds the active segment's index from the ``.log``), and a sparse index
with fewer entries is still a correct one for anybody reading the file meanwhile. ``trim()`` (on
roll) and ``close()`` shrink the file back to ``entries * entry size``.

*Sealed* (read-only): the constructor only records the path; it neither opens nor stats the
file, so opening thousands of sealed segments costs nothing (Kafka pain point 1). The first read
loads the file with one ``np.fromfile`` call. A sealed index never holds an ``mmap``: Kafka keeps
two map areas per segment and brokers with many segments die at ``vm.max_map_count`` (pain
point 4). A missing file reads as an empty index.

Why preallocate, and why trim
-----------------------------
A map cannot grow past the end of its file, and remapping on every append would cost more than the
append itself. So the file is sized to its full capacity up front, and appends only fill it in.
That creates the one crash hazard of this format: after a crash the file still has its
preallocated length, and "length // entry size" then counts a tail of zero entries as real (the
"Corrupt index ... last offset is 0" reports, pain point 2). We keep Kafka's format, so the file
is trimmed on roll and on close, and the index modules detect a zero tail by monotonicity (a zero
entry after a real one breaks the ordering). Two things make that detection reliable:

* ``truncate_to``/``reset`` overwrite the dropped entries with zeros. Otherwise the old entries
  would stay in the preallocated area, still in order, and a crash would bring them back as valid
  entries that point past the truncated log.
* Disk blocks are reserved (``posix_fallocate``) a chunk ahead of the write position. The file is
  otherwise sparse, and a store into a sparse page of a full disk kills the process with
  ``SIGBUS``. With the reservation, a full disk becomes an ``OSError`` from ``append`` before
  anything is written. Reserving in chunks rather than the whole capacity at open keeps a
  nearly-empty active index from holding 10 MiB of disk.

The native mirror
-----------------
Lookups never search the map. The on-disk fields are big-endian and interleaved (strided), and
``np.searchsorted`` over such a field first converts the whole column (about 750 µs at 1M
entries). Instead each field also lives in its own contiguous native-endian array (the *mirror*),
filled on load and on every append. Its capacity doubles as it fills, up to the index
capacity. Keeping the mirror in RAM also makes Kafka's "warm section" binary search unnecessary
(pain point 7): no lookup touches a cold page of the map.

Lookups
-------
A floor lookup is ``bisect.bisect_right`` over a ``memoryview`` of a mirror column (bounded by
the snapshot's count), not ``np.searchsorted``: both take about 1.3 us at 1M entries with warm
caches, but a lookup right after a large ``sendfile`` or write runs with cold caches, and there
numpy's dispatch (slice, typed scalar, searchsorted, scalar conversions) cost about 22 us against
12 us for bisect. (``searchsorted`` also needs a typed key, ``np.uint32(x)``: an untyped Python
int makes numpy cast the whole array, ~750 us at 1M entries.)

Thread safety
-------------
There is one writer at a time (the Log serialises writers) and any number of readers, and the
readers take no lock. A reader takes a single reference, the snapshot ``(count, columns)``, and
uses nothing else. The invariant is this: **a mirror slot below a published count is never
written again.**

* An append stores every field of slot ``count`` and then publishes a new snapshot with
  ``count + 1``. A reader therefore never sees a half-written entry.
* Growing the mirror copies it into new, larger arrays, and truncating or resetting copies the
  kept prefix into new arrays. Each of these publishes the new arrays in one reference assignment.
  A reader that still holds the old snapshot searches arrays that nobody writes any more.

Lifecycle calls (``trim``, ``flush``, ``close``, ``rename``) belong to the writer. A lookup that
races with ``close`` either completes on its snapshot or raises ``ValueError``. A sealed index's
lazy load runs under a lock, so concurrent first readers load the file once.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
import threading

import numpy as np

from ..errors import CorruptIndexError

__all__ = ["MmapArray", "U32_MAX", "I64_MIN", "I64_MAX"]

U32_MAX = 2**32 - 1
I64_MIN = -(2**63)
I64_MAX = 2**63 - 1

#: Disk space is reserved this far ahead of the write position (see "Why preallocate" above).
RESERVE_CHUNK_BYTES = 64 * 1024
#: Initial capacity, in entries, of a writable index's mirror; it doubles as it fills.
MIRROR_MIN_ENTRIES = 1024
#: A writable index stores its new rows into the map this many at a time (and on flush, trim, close).
STORE_EVERY_ENTRIES = 64

_STRUCT_CODES = {("u", 4): "I", ("i", 4): "i", ("u", 8): "Q", ("i", 8): "q"}



def _advise_random(mm: mmap.mmap) -> None:
    """Turn off read-around on a writable index's map (``MADV_RANDOM``).

    The map covers a preallocated, mostly sparse file. Without the hint the first store into a
    page not yet cached is a major fault that reads around it by the device's readahead window
    (``read_ahead_kb``: 8 MiB on this benchmark machine's virtual disk), zero-filling thousands
    of page-cache pages of holes: measured 1.5-4 ms for the first entry of every new segment's
    index, against a few microseconds with the hint. Entries are stored in order and lookups use
    the in-memory mirror, so read-around never helps. A hint only: ignored where unsupported.
    """
    advice = getattr(mmap, "MADV_RANDOM", None)
    if advice is not None:
        try:
            mm.madvise(advice)
        except (OSError, ValueError):  # pragma: no cover - a hint only
            pass

class MmapArray:
    """Base class of the indexes: a file of ``DTYPE`` entries plus its native mirror.

    Subclasses set ``DTYPE`` (big-endian, packed) and ``ENTRY_BYTES``, validate their appends
    and call :meth:`_append_row`, and read through :meth:`_view`.
    """

    DTYPE: np.dtype
    ENTRY_BYTES: int
    #: Fewer entries than this and the index cannot do its job (the time index reserves a slot).
    MIN_ENTRIES = 1
    #: Slots only a final entry may use: ``is_full`` once ``entries >= max_entries - RESERVED_SLOTS``.
    RESERVED_SLOTS = 0

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        fields = [cls.DTYPE.fields[name][0] for name in cls.DTYPE.names]
        if not all(f.str.startswith(">") for f in fields):
            raise TypeError(f"{cls.__name__}: every DTYPE field must be big-endian (Kafka's format)")
        # the row Struct is derived from DTYPE so the format is written in exactly one place
        cls._ROW = struct.Struct(">" + "".join(_STRUCT_CODES[(f.kind, f.itemsize)] for f in fields))
        cls._NATIVE = tuple(f.newbyteorder("=") for f in fields)
        if not (cls._ROW.size == cls.DTYPE.itemsize == cls.ENTRY_BYTES):
            raise TypeError(f"{cls.__name__}: DTYPE, its Struct and ENTRY_BYTES disagree on the entry size")

    def __init__(
        self, path: str, base_offset: int, *, max_index_bytes: int = 10 * 1024 * 1024, writable: bool = True
    ):
        if base_offset < 0:
            raise ValueError(f"base_offset must be >= 0, got {base_offset}")
        if max_index_bytes < self.MIN_ENTRIES * self.ENTRY_BYTES:
            raise ValueError(
                f"max_index_bytes must hold at least {self.MIN_ENTRIES} entries of {self.ENTRY_BYTES} bytes, "
                f"got {max_index_bytes}"
            )
        self.path = os.fspath(path)
        self.base_offset = base_offset
        #: Capacity in entries (for a writable index that found a larger file: that file's entries).
        self.max_entries = max_index_bytes // self.ENTRY_BYTES
        self._snap: tuple[int, tuple[np.ndarray, ...]] | None = None  # None: not loaded, or closed
        # the writer's own: the last entry as Python ints (None: empty) and memoryviews of the
        # mirror columns, so an append runs no numpy code (cold after a 1 MiB write: ~10 us)
        self._last: tuple[int, ...] | None = None
        self._mirror_views: tuple[memoryview, ...] = ()
        self._closed = False
        self._opened_writable = writable
        self._mm: mmap.mmap | None = None
        self._fd = -1
        self._reserved_bytes = 0
        self._stored = 0  # entries in the map; its slots from here on hold zeros (see _store_pending)
        self._torn_tail: int | None = None  # byte position of a partial trailing entry found on load
        self._needs_fsync = False  # trimmed since the last flush, and no longer has an fd to fsync
        self._load_lock = threading.Lock()
        if writable:
            self._open_writable()

    # --- opening -------------------------------------------------------------------------------

    def _open_writable(self) -> None:
        size = self.ENTRY_BYTES
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            length = os.fstat(fd).st_size
            count, torn = divmod(length, size)
            self.max_entries = max(self.max_entries, count)
            capacity_bytes = self.max_entries * size
            if length != capacity_bytes:
                os.ftruncate(fd, capacity_bytes)
            mm = mmap.mmap(fd, capacity_bytes)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._mm = fd, mm
        self._stored = count
        _advise_random(mm)
        if torn:
            self._torn_tail = count * size
            if count < self.max_entries:  # the partial entry is not an entry: clear its slot
                mm[count * size : (count + 1) * size] = bytes(size)
        spare = min(self.max_entries, max(MIRROR_MIN_ENTRIES, count + count // 2)) - count
        self._set_snap(count, self._mirror(np.frombuffer(mm, self.DTYPE, count), spare))
        self._reserve((count + 1) * size)

    def _load(self) -> tuple[int, tuple[np.ndarray, ...]]:
        """Read a sealed index on first use (or raise if closed)."""
        with self._load_lock:
            if self._closed:
                raise ValueError(f"index {self.path} is closed")
            if self._snap is not None:
                return self._snap
            try:
                with open(self.path, "rb") as file:
                    count, torn = divmod(os.fstat(file.fileno()).st_size, self.ENTRY_BYTES)
                    disk = np.fromfile(file, dtype=self.DTYPE, count=count)
            except FileNotFoundError:
                torn, disk = 0, np.empty(0, self.DTYPE)
            count = len(disk)  # shorter than the stat if the file shrank under us
            self._torn_tail = count * self.ENTRY_BYTES if torn else None
            self._snap = (count, self._mirror(disk, 0))
            return self._snap

    def _mirror(self, disk: np.ndarray, spare: int) -> tuple[np.ndarray, ...]:
        columns = []
        for name, native in zip(self.DTYPE.names, self._NATIVE, strict=True):
            column = np.empty(len(disk) + spare, native)
            column[: len(disk)] = disk[name]  # byte-swapping copy out of the file's layout
            columns.append(column)
        return tuple(columns)

    def _view(self) -> tuple[int, tuple[np.ndarray, ...]]:
        """The current snapshot ``(count, columns)``; readers use only this (see Thread safety)."""
        snap = self._snap
        if snap is None:
            snap = self._load()
        return snap

    # --- state ---------------------------------------------------------------------------------

    @property
    def entries(self) -> int:
        return self._view()[0]

    @property
    def writable(self) -> bool:
        """True while the file is mapped for appends (false once trimmed, closed, or sealed)."""
        return self._mm is not None

    @property
    def closed(self) -> bool:
        return self._closed

    def _require_writable(self) -> mmap.mmap:
        if self._mm is None:
            state = "closed" if self._closed else "not writable (sealed or trimmed)"
            raise ValueError(f"index {self.path} is {state}")
        return self._mm

    def _slot(self, n: int) -> tuple[int, tuple[np.ndarray, ...]]:
        count, columns = self._view()
        if not 0 <= n < count:
            raise IndexError(f"entry {n} out of range: index {self.path} has {count} entries")
        return n, columns

    def _raise_corrupt(self, slot: int, message: str) -> None:
        raise CorruptIndexError(
            f"corrupt index (base offset {self.base_offset}): {message}",
            path=self.path,
            position=slot * self.ENTRY_BYTES,
        )

    def _check_order(self, strict: np.ndarray, strict_name: str, rising: np.ndarray, rising_name: str) -> None:
        """The shared sanity rule of both indexes: ``strict`` (the first ``count`` values of the
        key column) strictly increases, so a zero tail after slot 0 shows, and ``rising`` never
        decreases. Raises ``CorruptIndexError`` at the first entry that breaks either."""
        count = len(strict)
        bad_strict = np.flatnonzero(strict[1:] <= strict[:-1])
        bad_rising = np.flatnonzero(rising[1:] < rising[:-1])
        first = min(int(bad[0]) + 1 if len(bad) else count for bad in (bad_strict, bad_rising))
        if first == count:
            return
        if len(bad_strict) and int(bad_strict[0]) + 1 == first:
            what = f"{strict_name} {int(strict[first])} is not greater than {int(strict[first - 1])}"
            if strict[first] == 0:
                what += " (a zero tail: the file was not trimmed before a crash)"
        else:
            what = f"{rising_name} {int(rising[first])} is below {int(rising[first - 1])}"
        self._raise_corrupt(first, f"entry {first} of {count}: {what}")

    def _check_length(self) -> None:
        self._view()  # a sealed index learns its length on load
        if self._torn_tail is not None:
            raise CorruptIndexError(
                f"corrupt index (base offset {self.base_offset}): file length is not a multiple of "
                f"{self.ENTRY_BYTES} bytes (partial entry)",
                path=self.path,
                position=self._torn_tail,
            )

    # --- writing (one writer at a time) ---------------------------------------------------------

    def _reserve(self, end_bytes: int) -> None:
        if end_bytes <= self._reserved_bytes or not hasattr(os, "posix_fallocate"):
            return
        capacity_bytes = self.max_entries * self.ENTRY_BYTES
        chunk = RESERVE_CHUNK_BYTES
        new_end = min(capacity_bytes, -(-end_bytes // chunk) * chunk)
        if new_end <= self._reserved_bytes:
            return
        try:
            os.posix_fallocate(self._fd, self._reserved_bytes, new_end - self._reserved_bytes)
        except OSError as error:
            if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise  # ENOSPC: refuse the append before the map is touched
            new_end = capacity_bytes  # the file system cannot reserve: stop trying (sparse, as Kafka)
        self._reserved_bytes = new_end

    def _set_snap(self, count: int, columns: tuple[np.ndarray, ...]) -> None:
        """Publish a new snapshot of a writable index (and the writer's views of it)."""
        self._mirror_views = tuple(memoryview(column) for column in columns)
        self._last = tuple(int(column[count - 1]) for column in columns) if count else None
        self._snap = (count, columns)

    def _append_row(self, *values: int) -> None:
        """Store one validated entry in the mirror and publish it; every ``STORE_EVERY_ENTRIES``
        entries the new rows go to the map. Disk space for the row is reserved first, so a full
        disk raises ``OSError`` here, before anything changes."""
        self._require_writable()
        count, columns = self._snap
        if (count + 1) * self.ENTRY_BYTES > self._reserved_bytes:
            self._reserve((count + 1) * self.ENTRY_BYTES)
        if count == len(columns[0]):
            self._set_snap(count, self._grown(columns, count))
            columns = self._snap[1]
        for view, value in zip(self._mirror_views, values, strict=True):
            view[count] = value
        self._last = values
        self._snap = (count + 1, columns)  # publish only now: both fields are in place
        self._torn_tail = None
        if count + 1 - self._stored >= STORE_EVERY_ENTRIES:
            self._store_pending()

    def _store_pending(self) -> None:
        """Write the entries not in the map yet (from the mirror) into it, in the file's layout."""
        count = self._snap[0]
        stored = self._stored
        if stored >= count:
            return
        mm, pack, size = self._mm, self._ROW.pack_into, self.ENTRY_BYTES
        views = self._mirror_views
        for slot in range(stored, count):
            pack(mm, slot * size, *[view[slot] for view in views])
        self._stored = count

    def _grown(self, columns: tuple[np.ndarray, ...], count: int) -> tuple[np.ndarray, ...]:
        capacity = min(self.max_entries, max(MIRROR_MIN_ENTRIES, 2 * count))
        grown = []
        for column in columns:
            new = np.empty(capacity, column.dtype)
            new[:count] = column[:count]
            grown.append(new)
        return tuple(grown)

    def _truncate_before_offset(self, offset: int, column: int) -> None:
        """Drop every entry whose absolute offset is >= ``offset``; column ``column`` of the
        snapshot holds the relative offsets (non-decreasing in both indexes)."""
        self._require_writable()
        count, columns = self._snap
        target = offset - self.base_offset
        if target > U32_MAX:
            return
        relative = columns[column]
        keep = 0 if target <= 0 else int(relative[:count].searchsorted(np.uint32(target), side="left"))
        self._truncate_rows(keep)

    def _truncate_rows(self, keep: int) -> None:
        """Keep the first ``keep`` entries; zero the dropped ones in the file (see module doc)."""
        mm = self._require_writable()
        count, columns = self._snap
        if keep >= count:
            return
        kept = []
        for column in columns:
            new = np.empty(len(column), column.dtype)
            new[:keep] = column[:keep]
            kept.append(new)
        self._set_snap(keep, tuple(kept))
        if keep < self._stored:  # (slots from _stored on hold zeros already)
            size = self.ENTRY_BYTES
            mm[keep * size : self._stored * size] = bytes((self._stored - keep) * size)
            self._stored = keep
        self._torn_tail = None

    def truncate_entries(self, count: int) -> None:
        """Keep only the first ``count`` entries (undoes appends: ``count`` read from ``entries``
        before them); nothing changes if there are no more than that (writable only)."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        self._truncate_rows(count)

    def reset(self) -> None:
        """Drop every entry (before a rebuild); the file stays preallocated."""
        self._require_writable()
        self._truncate_rows(0)
        self._torn_tail = None  # also when there was nothing to truncate

    def trim(self) -> None:
        """Shrink the file to ``entries * ENTRY_BYTES`` and unmap it (on roll and close).

        The entries stay readable from the mirror; appends are refused from now on (reopen the
        file writable to grow it again). No-op for a sealed or already trimmed index.
        """
        if self._mm is None:
            if self._closed:
                raise ValueError(f"index {self.path} is closed")
            return
        self._store_pending()
        count, columns = self._snap
        self._snap = (count, tuple(column[:count].copy() for column in columns))  # drop the spare
        self._mirror_views, self._last = (), None  # (no more appends)
        self._unmap(truncate_to_bytes=count * self.ENTRY_BYTES)
        self._needs_fsync = True

    def _unmap(self, truncate_to_bytes: int | None = None) -> None:
        mm, fd = self._mm, self._fd
        self._mm, self._fd, self._reserved_bytes = None, -1, 0
        try:
            mm.close()
            if truncate_to_bytes is not None:
                os.ftruncate(fd, truncate_to_bytes)
        finally:
            os.close(fd)

    def flush(self) -> None:
        """Make the written entries (and a trim) durable: ``msync`` + ``fsync``. No-op when sealed."""
        if self._closed:
            raise ValueError(f"index {self.path} is closed")
        if self._mm is not None:
            self._store_pending()
            self._mm.flush()
            os.fsync(self._fd)
        elif self._needs_fsync:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._needs_fsync = False

    def close(self, *, trim: bool = True) -> None:
        """Release the map and the mirror; idempotent. ``trim=False`` leaves the file as a crash
        would: preallocated, without the rows not stored yet (see Writable above); any later use
        raises ``ValueError``."""
        if self._closed:
            return
        with self._load_lock:
            try:
                if self._mm is not None:
                    if trim:
                        self.trim()
                    else:
                        self._unmap()
            finally:
                self._closed = True
                self._snap = None

    def rename(self, new_path: str) -> None:
        """Rename the file (``.deleted``/``.swap``); the index keeps working under the new name.

        A sealed index whose file does not exist only changes its path. The caller fsyncs the
        directory if the rename must be durable.
        """
        new_path = os.fspath(new_path)
        try:
            os.rename(self.path, new_path)
        except FileNotFoundError:
            if self._opened_writable:
                raise
        self.path = new_path

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._closed:
            state = "closed"
        elif self._snap is None:
            state = "sealed, not loaded"
        else:
            state = f"{self._snap[0]} entries, {'writable' if self.writable else 'read-only'}"
        return f"<{type(self).__name__} {self.path!r} base_offset={self.base_offset} {state}>"
