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
   byte for byte; a batch that loses records is rebuilt with the same codec, base offset, last
   offset delta, producer fields and leader epoch (offsets never change; gaps appear); a batch
   that loses every record is dropped, except the last batch of each group, which stays as an
   empty header (records_count 0, no codec), as Kafka keeps the last batch of a pass. That keeps
   each new segment ending exactly where its group ended, which crash recovery relies on: it
   takes the range a finished rewrite replaces from the ``.swap`` files' last offsets.
   The files are fsynced and given the mtime of the group's last source segment (time-based
   retention keeps seeing the old age).
4. *Swap.* One :meth:`Log.replace_segments` call for all groups of the pass: the rewrite is
   committed by one directory fsync, so a crash at any step leaves, after reopen, the log from
   before the pass or the log from after it -- never a half-cleaned mix. (Kafka swaps group by
   group; the price here is that all groups of a pass are on disk at once before the swap.)
5. *Checkpoint.* ``end_offset`` becomes the log's first dirty offset, written atomically, with the
   earliest delete horizon still pending (a pass is due again when it passes).

*Tombstones* (value ``None``) survive the pass that first keeps them; that pass rebuilds their
batch with attribute bit 6 set and base_timestamp = the *delete horizon* = now +
``delete_retention_ms`` (KIP-534; record timestamp deltas are re-based on it, so every record
keeps its timestamp). A later pass at or after the horizon drops them. Consumers therefore have
at least ``delete_retention_ms`` to see a delete.

*Failures.* An exception in a pass (a corrupt batch, a full disk) removes the pass's ``.cleaned``
files, marks the log *uncleanable* in :class:`CleanerStats` (retried after
``retry_uncleanable_after_ms``) and is returned as a result, never raised: one bad partition
never stops the caller's loop over the others (KAFKA-7215).

*Memory.* ``memory_budget_bytes`` bounds what a pass allocates: a read window, the pending keys of
one chunk, and the offset map, which gets the rest. The exceptions: a single batch larger than
the window is read whole, and so is a batch that decompresses to more than a window.

Not handled (the library has no transactions): control batches are kept as they are, and
aborted transactional data is treated as committed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import crc32c
import numpy as np

from . import batch as batch_format
from .batch import (
    CODEC_MASK,
    CRC_OFFSET,
    CRC_START,
    DELETE_HORIZON_FLAG,
    HEADER,
    HEADER_SIZE,
    LOG_APPEND_TIME_FLAG,
    LOG_OVERHEAD,
    MAGIC,
    BatchHeader,
)
from .compaction import CleanableRange, cleanable_range, due_reason, plan_groups, retained, settings_from
from .compression import compress, decompress
from .errors import CorruptBatchError, LogClosedError
from .files import (
    CLEANED_SUFFIX,
    CLEANER_CHECKPOINT_NAME,
    INDEX_SUFFIX,
    LOG_SUFFIX,
    TIMEINDEX_SUFFIX,
    segment_path,
    write_atomically,
)
from .index import OffsetIndex, TimeIndex
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

U64 = np.uint64
_MIN_BATCH_LENGTH = HEADER_SIZE - LOG_OVERHEAD
_CRC = struct.Struct(">I")
_IOV_MAX = 1024


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


# --- key hashes ---------------------------------------------------------------------------------

# Why not hashlib: blake2b costs ~350 ns a key from Python, more than all the rest of a pass.
# Keys are hashed in bulk instead, with numpy, straight out of the records' bytes: two 64-bit
# multiply-xorshift lanes over the key's 8-byte words (the last one zero-padded), seeded with the
# length, each finished with MurmurHash3's fmix64. Every step of the first lane is a bijection of
# its state for a given word, so two different keys of the same length never collide in it; for
# the rest, 128 bits make an accidental collision as unlikely as with Kafka's MD5. It is not a
# cryptographic hash, but its seeds are random per pass, and a producer able to craft colliding
# keys can write to the topic, so it can overwrite or delete those keys anyway.
_MULTIPLIERS = (U64(0x9E3779B97F4A7C15), U64(0xBF58476D1CE4E5B9), U64(0x94D049BB133111EB))
_WORD_MASKS = np.array([0] + [(1 << (8 * i)) - 1 for i in range(1, 8)] + [2**64 - 1], dtype=U64)
_PAD = bytes(8)


def _fmix64(h: np.ndarray) -> np.ndarray:
    h ^= h >> U64(33)
    h *= U64(0xFF51AFD7ED558CCD)
    h ^= h >> U64(33)
    h *= U64(0xC4CEB9FE1A85EC53)
    h ^= h >> U64(33)
    return h


def hash_keys(buffer: bytes, starts: np.ndarray, lengths: np.ndarray, seeds: tuple[int, int]):
    """``(h1, h2)``, two uint64 arrays: the 128-bit hash under ``seeds`` of each key
    ``buffer[starts[i] : starts[i] + lengths[i]]``. ``buffer`` must hold 8 bytes after the end of
    the last key (callers append ``bytes(8)``)."""
    n = len(starts)
    if n == 0:
        return np.zeros(0, U64), np.zeros(0, U64)
    # every byte position as the start of a little-endian uint64 (a strided view: no copy)
    words = np.ndarray((len(buffer) - 7,), "<u8", buffer, 0, (1,))
    mult_a, mult_b, mult_len = _MULTIPLIERS
    lanes_a = U64(seeds[0]) ^ (lengths.view(U64) * mult_len)
    lanes_b = U64(seeds[1]) + lengths.view(U64)
    shortest, longest = int(lengths.min()), int(lengths.max())
    for w in range((longest + 7) // 8):
        if shortest > 8 * w:  # every key has this word
            rows = None
            word = words[starts + 8 * w]
            if shortest - 8 * w < 8 or longest != shortest:
                word &= _WORD_MASKS[np.minimum(lengths - 8 * w, 8)]
            a, b = lanes_a, lanes_b
        else:
            rows = np.flatnonzero(lengths > 8 * w)
            word = words[starts[rows] + 8 * w] & _WORD_MASKS[np.minimum(lengths[rows] - 8 * w, 8)]
            a, b = lanes_a[rows], lanes_b[rows]
        a ^= word
        a *= mult_a
        a ^= a >> U64(32)
        b += word
        b *= mult_b
        b ^= b >> U64(29)
        if rows is not None:
            lanes_a[rows] = a
            lanes_b[rows] = b
    return _fmix64(lanes_a), _fmix64(lanes_b)


def hash_key_list(keys: Sequence[bytes], seeds: tuple[int, int]):
    """:func:`hash_keys` for a list of keys (bytes-like, not None)."""
    lengths = np.fromiter(map(len, keys), np.int64, len(keys))
    return hash_keys(b"".join([*keys, _PAD]), np.cumsum(lengths) - lengths, lengths, seeds)


# --- the offset map -----------------------------------------------------------------------------


class OffsetMap:
    """Key hash -> latest offset, in fixed numpy arrays (Kafka's ``SkimpyOffsetMap``, vectorised).

    Open addressing with linear probing over three arrays of ``slots`` entries: the two hash
    halves and the stored value (0 = empty slot). A value is ``offset * 2 + is_tombstone + 1``,
    so the larger value is the later offset. Inserts and lookups run for a whole chunk of keys
    at once: each round every pending key probes one slot; keys that find the same empty slot
    settle it by all writing a claim into it and reading back which claim stuck, and the others
    look at that slot again next round (it may now hold their own key: a chunk may repeat keys).
    ``capacity`` keys (``LOAD_FACTOR`` of the slots) fit; the caller stops before more.
    """

    SLOT_BYTES = 24 + 6  # two hash halves and a value, plus the sorted copy of the values (at load)
    LOAD_FACTOR = 0.75

    def __init__(self, memory_bytes: int):
        slots = max(int(memory_bytes) // self.SLOT_BYTES, 16)
        self.slots = slots
        self.capacity = int(slots * self.LOAD_FACTOR)
        self.size = 0
        self._h1 = np.zeros(slots, U64)  # zeroed pages are mapped lazily: a large, sparsely
        self._h2 = np.zeros(slots, U64)  # used map costs only what it touches
        self._values = np.zeros(slots, np.int64)

    def _home(self, h1: np.ndarray) -> np.ndarray:
        # the high 32 bits scaled to [0, slots): a multiply instead of a division
        return (((h1 >> U64(32)) * U64(self.slots)) >> U64(32)).astype(np.int64)

    def put(self, h1: np.ndarray, h2: np.ndarray, values: np.ndarray) -> None:
        """Store ``values`` (positive) under the keys ``(h1, h2)``; for a key already there, or
        repeated in the chunk, the largest value stays. The caller makes sure
        ``size + len(values) <= capacity``."""
        table1, table2, table_v = self._h1, self._h2, self._values
        pending = np.arange(len(values))
        pos = self._home(h1)
        while len(pending):
            stored = table_v[pos]
            occupied = stored > 0
            match = occupied & (table1[pos] == h1[pending]) & (table2[pos] == h2[pending])
            if match.any():
                np.maximum.at(table_v, pos[match], values[pending[match]])
            free = ~occupied
            lost = np.zeros(len(pending), bool)
            if free.any():
                slots, who = pos[free], pending[free]
                table_v[slots] = -(who + 1)  # claims; one per slot sticks
                won = table_v[slots] == -(who + 1)
                slots_won, who_won = slots[won], who[won]
                table1[slots_won] = h1[who_won]
                table2[slots_won] = h2[who_won]
                table_v[slots_won] = values[who_won]
                self.size += len(who_won)
                lost[np.flatnonzero(free)[~won]] = True
            step = occupied & ~match
            again = step | lost
            pending = pending[again]
            pos = pos[again] + step[again]
            pos[pos == self.slots] = 0

    def get(self, h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
        """The stored value for each key (int64), 0 where the key is absent."""
        result = np.zeros(len(h1), np.int64)
        table1, table2, table_v = self._h1, self._h2, self._values
        pending = np.arange(len(h1))
        pos = self._home(h1)
        while len(pending):
            stored = table_v[pos]
            occupied = stored > 0
            match = occupied & (table1[pos] == h1[pending]) & (table2[pos] == h2[pending])
            result[pending[match]] = stored[match]
            step = occupied & ~match
            pending = pending[step]
            pos = pos[step] + 1
            pos[pos == self.slots] = 0
        return result

    def sorted_values(self) -> np.ndarray:
        """Every stored value minus one (``offset * 2 + is_tombstone``), ascending."""
        values = self._values[self._values > 0]
        values -= 1
        values.sort()
        return values


# --- where the records lie ----------------------------------------------------------------------
#
# The cleaner never builds a Python object per record. It joins the (uncompressed) records
# sections of the batches of one read window into one buffer, locates every record's fields in
# it -- the layout of logstore.batch's docstring -- with one vectorised pass per field for the
# whole window, hashes keys where they lie, and cuts kept records out as byte ranges. A record
# whose batch keeps its base offset and base timestamp is copied unchanged, headers and all.


class _Malformed(Exception):
    """Records that do not parse; ``batch`` is the index of the batch (for path and position)."""

    def __init__(self, message: str, batch: int):
        super().__init__(message)
        self.batch = batch


class _Records(NamedTuple):
    """Every record of some batches, located in ``buffer`` (their records sections, joined and
    padded for :func:`hash_keys`). Arrays have one int64 entry per record, positions index
    ``buffer``; batch ``j`` holds records ``first[j] .. first[j + 1]``."""

    buffer: bytes
    first: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    attributes_at: np.ndarray  # the attributes byte, right after the length varint
    rest_at: np.ndarray  # after the offset delta: key length, key, value, headers
    timestamp_deltas: np.ndarray
    offset_deltas: np.ndarray
    key_starts: np.ndarray
    key_lengths: np.ndarray  # -1: no key
    value_lengths: np.ndarray  # -1: a tombstone


def _locate(sections: list, headers: list[BatchHeader]) -> _Records:
    """Locate the records of ``sections`` (the records of the batches ``headers``, uncompressed)."""
    buffer = b"".join([*sections, _PAD])
    data = np.frombuffer(buffer, np.uint8)
    counts = [h.records_count for h in headers]
    starts = []
    base = 0
    for j, section in enumerate(sections):
        starts.append(_record_starts(section, len(section), counts[j], j) + base)
        base += len(section)
    first = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=first[1:])
    ends = np.concatenate([s[1:] for s in starts])
    record_starts = np.concatenate([s[:-1] for s in starts])
    fields = _Fields(data, ends, first)
    lengths, width = fields.varints(record_starts, 5)
    fields.check((lengths < 1) | (record_starts + width + lengths != ends), "a record length is wrong")
    attributes_at = record_starts + width
    timestamp_deltas, width = fields.varints(attributes_at + 1, 10)
    pos = attributes_at + 1 + width
    offset_deltas, width = fields.varints(pos, 5)
    rest_at = pos + width
    key_lengths, width = fields.varints(rest_at, 5)
    key_starts = rest_at + width
    pos = key_starts + np.maximum(key_lengths, 0)
    value_lengths, width = fields.varints(pos, 5)
    fields.check(pos + width + np.maximum(value_lengths, 0) >= ends, "fields run past the record's length")
    fields.check((key_lengths < -1) | (value_lengths < -1), "a negative key or value length")
    last_deltas = np.repeat(np.array([h.last_offset_delta for h in headers], np.int64), counts)
    fields.check((offset_deltas < 0) | (offset_deltas > last_deltas), "an offset delta outside the batch")
    return _Records(buffer, first, record_starts, ends, attributes_at, rest_at, timestamp_deltas,
                    offset_deltas, key_starts, key_lengths, value_lengths)


class _Fields:
    """Vectorised field reads over the records of a :class:`_Records`."""

    def __init__(self, data: np.ndarray, ends: np.ndarray, first: np.ndarray):
        self.data, self.ends, self.first = data, ends, first

    def check(self, bad: np.ndarray, message: str) -> None:
        if bad.any():
            record = int(np.argmax(bad))
            raise _Malformed(message, int(np.searchsorted(self.first, record, side="right")) - 1)

    def varints(self, pos: np.ndarray, max_bytes: int) -> tuple[np.ndarray, np.ndarray | int]:
        """The zigzag varint at each ``pos`` (ending within its record): values and widths."""
        self.check(pos >= self.ends, "fields run past the record's length")
        data = self.data
        byte = data[pos]
        if byte.max() < 0x80:
            raw = byte.astype(U64)
            width = 1
        else:
            raw = (byte & 0x7F).astype(U64)
            more = byte >> 7
            width = 1 + more.astype(np.int64)
            last = len(data) - 1
            for j in range(1, max_bytes + 1):
                if not more.any():
                    break
                self.check((more > 0) & ((pos + j >= self.ends) | (j == max_bytes)), "a varint is too long")
                byte = data[np.minimum(pos + j, last)] * more
                raw |= (byte & 0x7F).astype(U64) << U64(7 * j)
                more = byte >> 7
                width += more
        return (raw >> U64(1)).view(np.int64) ^ -(raw & U64(1)).view(np.int64), width


_MIN_RECORD_BYTES = 7  # length, attributes, timestamp, offset, key length, value length, header count
_PROBE_DTYPES = {1: ("u1", 0), 2: ("<u2", 0), 3: ("<u4", 0xFFFFFF), 4: ("<u4", 0), 5: ("<u8", 0xFF_FFFF_FFFF)}


def _record_starts(section, end: int, count: int, batch: int) -> np.ndarray:
    """Start of every record of one section, plus ``end`` as entry ``count``.

    Each record starts where the previous one's length says, so this walk is sequential (~0.12 us
    a record in Python). Runs of equal-sized records make it cheap: when the last three records
    had one size, the rest of the section is viewed as rows of that size and the length varints
    of all rows are compared with the first at once. A probe costs as much as a few dozen steps,
    so one that finds a short run makes the walk take twice as many steps before the next check.
    """
    if not 0 < count <= end // _MIN_RECORD_BYTES:
        raise _Malformed(f"{count} records cannot fill {end} bytes", batch)
    view = section if isinstance(section, bytes) else memoryview(section).cast("B")
    starts = np.empty(count + 1, np.int64)
    stepped: list[int] = []  # starts found by stepping, not yet copied into ``starts``
    filled = i = pos = 0
    block = 32
    try:
        append = stepped.append
        while i < count:
            steps = min(count - i, block)
            for _ in range(steps):  # (lengths are checked afterwards, all at once: see _locate)
                append(pos)
                byte = view[pos]
                if byte < 0x80:
                    pos += 1 + (byte >> 1)
                    continue
                second = view[pos + 1]
                if second < 0x80:
                    pos += 2 + (((byte & 0x7F) | (second << 7)) >> 1)
                    continue
                raw, width = _long_varint(view, pos, batch)
                pos += width + (raw >> 1)
            i += steps
            if i == count or len(stepped) < 3:
                continue
            size = pos - stepped[-1]
            if not (size == stepped[-1] - stepped[-2] == stepped[-2] - stepped[-3] and size >= 8):
                continue  # (the probe reads up to 8 bytes a row)
            length, width = _long_varint(view, pos, batch)
            rows = min(count - i, (end - pos) // size)
            if width + (length >> 1) != size or rows < 2:
                continue
            # the length varint of every row as one little-endian integer (widths 3 and 5 read a
            # few bytes more, still inside the row)
            dtype, mask = _PROBE_DTYPES[width]
            lengths = np.ndarray((rows,), dtype, view, pos, (size,))
            if mask:
                lengths = lengths & mask
            same = lengths == lengths[0]
            run = rows if same.all() else int(np.argmin(same))
            starts[filled : filled + len(stepped)] = stepped
            stepped.clear()
            starts[i : i + run] = np.arange(pos, pos + run * size, size)
            i += run
            pos += run * size
            filled = i
            block = 32 if run >= 64 else min(block * 2, 4096)
    except IndexError:
        raise _Malformed(f"{count} records do not fit the section", batch) from None
    starts[filled : filled + len(stepped)] = stepped
    if pos != end:
        raise _Malformed(f"the records end at byte {pos} of a {end}-byte section", batch)
    starts[count] = end
    return starts


def _long_varint(view, pos: int, batch: int) -> tuple[int, int]:
    """The raw (zigzagged) varint at ``pos`` and its width, up to 5 bytes."""
    raw = 0
    for width in range(5):
        byte = view[pos + width]
        raw |= (byte & 0x7F) << (7 * width)
        if byte < 0x80:
            return raw, width + 1
    raise _Malformed("a record length is longer than 5 bytes", batch)


# --- batches out --------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    z = ((value << 1) ^ (value >> 63)) & (2**64 - 1)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _wrap64(value: int) -> int:
    return (value + 2**63) % 2**64 - 2**63


def _gather(records: _Records, rows: np.ndarray) -> bytes:
    """The bytes of the records ``rows`` (ascending), each run of neighbours cut as one slice."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    begin = records.starts[rows[np.concatenate(([0], breaks))]].tolist()
    finish = records.ends[rows[np.concatenate((breaks - 1, [len(rows) - 1]))]].tolist()
    buffer = records.buffer
    return b"".join([buffer[a:b] for a, b in zip(begin, finish, strict=True)])


def _rebased(records: _Records, rows: np.ndarray, old_base: int, new_base: int) -> bytes:
    """The records ``rows`` with their timestamp deltas moved from base ``old_base`` to
    ``new_base`` (each record keeps its timestamp); every other byte of a record is copied."""
    parts = []
    buffer = records.buffer
    for i in rows.tolist():
        attributes_at = int(records.attributes_at[i])
        body = b"".join((
            buffer[attributes_at : attributes_at + 1],
            _varint(_wrap64(old_base + int(records.timestamp_deltas[i]) - new_base)),
            _varint(int(records.offset_deltas[i])),
            buffer[int(records.rest_at[i]) : int(records.ends[i])],
        ))
        parts.append(_varint(len(body)))
        parts.append(body)
    return b"".join(parts)


def _assemble(header: BatchHeader, records: bytes, *, count: int, attributes: int, base_timestamp: int,
              max_timestamp: int) -> bytes:
    """A batch with ``header``'s offsets, producer fields and leader epoch around ``records``
    (compressed with the codec in ``attributes``, default level); the CRC is computed here."""
    codec = attributes & CODEC_MASK
    body = compress(codec, records) if codec and count else records
    if not count:
        attributes &= ~CODEC_MASK
    fields = header._replace(
        batch_length=_MIN_BATCH_LENGTH + len(body),
        magic=MAGIC,
        crc=0,
        attributes=attributes,
        base_timestamp=base_timestamp,
        max_timestamp=max_timestamp,
        records_count=count,
    )
    packed = HEADER.pack(*fields)
    crc = crc32c.crc32c(body, crc32c.crc32c(memoryview(packed)[CRC_START:]))
    return b"".join((packed[:CRC_OFFSET], _CRC.pack(crc), packed[CRC_START:], body))


def _empty_batch(header: BatchHeader) -> bytes:
    """``header``'s batch with no records (no codec, no horizon): it keeps the batch's offset
    range, and so the segment's last offset, after every record of it was cleaned away."""
    attributes = header.attributes & ~(CODEC_MASK | DELETE_HORIZON_FLAG)
    return _assemble(header, b"", count=0, attributes=attributes, base_timestamp=header.max_timestamp,
                     max_timestamp=header.max_timestamp)


# --- reading and writing segments ---------------------------------------------------------------


def _relocated(error: CorruptBatchError, path: str, base: int) -> CorruptBatchError:
    message = str(error)
    suffix = f" at position {error.position}"
    if error.position is not None and message.endswith(suffix):
        message = message[: -len(suffix)]
    return CorruptBatchError(message, path=path, position=base + (error.position or 0))


class _Reader:
    """Reads a sealed segment window by window into one reused buffer; every batch is validated
    (size, magic, CRC). A window's views are valid until the next window is read."""

    def __init__(self, window_bytes: int):
        self._buffer = bytearray(window_bytes)

    def windows(self, segment, start: int):
        """Yield ``(view, file position of view, [(position in view, header), ...])``."""
        fd = segment.file.fd
        end = segment.size
        path = segment.log_path
        position = start
        while position < end:
            want = min(len(self._buffer), end - position)
            got = os.preadv(fd, [memoryview(self._buffer)[:want]], position)
            view = memoryview(self._buffer)[:got]
            batches = []
            at = 0
            while got - at >= HEADER_SIZE:
                batch_length = int.from_bytes(view[at + 8 : at + 12], "big", signed=True)
                size = LOG_OVERHEAD + batch_length
                if batch_length < _MIN_BATCH_LENGTH or position + at + size > end:
                    raise CorruptBatchError(
                        f"batch_length {batch_length} does not fit the segment ({end} bytes)",
                        path=path,
                        position=position + at,
                    )
                if at + size > got:
                    break
                try:
                    header = batch_format.validate(view, at)
                except CorruptBatchError as error:
                    raise _relocated(error, path, position) from None
                batches.append((at, header))
                at += size
            if not batches:
                if got < HEADER_SIZE:
                    raise CorruptBatchError(f"{got} bytes at the end are not a batch", path=path, position=position)
                view.release()
                self._buffer = bytearray(size)  # one batch larger than the window
                continue
            yield view, position, batches
            position += at


class _SegmentWriter:
    """Writes one ``<base>.log.cleaned`` and its two ``.cleaned`` indexes, with the index rule of
    :meth:`Segment.append` (an entry before a batch once more than ``index_interval_bytes`` were
    written since the last one). Pieces are buffered and written with ``writev``."""

    def __init__(self, directory: str, base_offset: int, config, buffer_bytes: int):
        self.base_offset = base_offset
        self._buffer_bytes = buffer_bytes
        self.paths = [segment_path(directory, base_offset, s) + CLEANED_SUFFIX
                      for s in (LOG_SUFFIX, INDEX_SUFFIX, TIMEINDEX_SUFFIX)]
        for path in self.paths:
            if os.path.exists(path):
                os.unlink(path)
        self._fd = os.open(self.paths[0], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._offset_index = OffsetIndex(self.paths[1], base_offset, max_index_bytes=config.segment_index_bytes)
        self._time_index = TimeIndex(self.paths[2], base_offset, max_index_bytes=config.segment_index_bytes)
        self._interval = config.index_interval_bytes
        self.position = 0
        self._since = 0
        self._max_ts = (-1, base_offset)
        self._pieces: list = []
        self._pending = 0
        self._run: tuple[memoryview, int, int] | None = None  # neighbouring copied batches

    def add(self, header: BatchHeader, data=None, view: memoryview | None = None, at: int = 0) -> None:
        """Append one batch: ``data`` (bytes), or the bytes at ``view[at : at + header.size]``."""
        size = header.size if data is None else len(data)
        if self._since > self._interval and not (self._offset_index.is_full or self._time_index.is_full):
            self._offset_index.append(header.last_offset, self.position)
            self._time_index.append(*self._max_ts)
            self._since = 0
        self._since += size
        if header.max_timestamp > self._max_ts[0]:
            self._max_ts = (header.max_timestamp, header.last_offset)
        self.position += size
        if data is None:
            run = self._run
            if run is not None and run[0] is view and run[2] == at:
                self._run = (view, run[1], at + size)
                return
            self._end_run()
            self._run = (view, at, at + size)
            return
        self._end_run()
        self._push(data)

    def _end_run(self) -> None:
        if self._run is not None:
            view, start, end = self._run
            self._run = None
            self._push(view[start:end])

    def _push(self, piece) -> None:
        self._pieces.append(piece)
        self._pending += len(piece)
        if self._pending >= self._buffer_bytes or len(self._pieces) >= _IOV_MAX:
            self.flush()

    def flush(self) -> None:
        """Write everything buffered (before the views it refers to are reused)."""
        self._end_run()
        pieces = self._pieces
        while pieces:
            chunk = pieces[:_IOV_MAX]
            written = os.writev(self._fd, chunk)
            done = 0
            while done < len(chunk) and written >= len(chunk[done]):
                written -= len(chunk[done])
                done += 1
            del pieces[:done]
            if written:
                pieces[0] = memoryview(pieces[0])[written:]
        self._pending = 0

    def finish(self, mtime_ns: int) -> None:
        """Flush, write the final time entry, trim the indexes, copy ``mtime_ns``, fsync all."""
        self.flush()
        if self._max_ts[0] >= 0:
            self._time_index.append(*self._max_ts, final=True)
        for index in (self._offset_index, self._time_index):
            index.trim()
            index.flush()
            index.close()
        os.utime(self._fd, ns=(mtime_ns, mtime_ns))
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1

    def abort(self) -> None:
        for index in (self._offset_index, self._time_index):
            index.close(trim=False)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        for path in self.paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


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
        self.reader = _Reader(self.window_bytes)
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

    # reading records

    @staticmethod
    def _section(segment, view, position: int, at: int, header: BatchHeader):
        """The records of a batch, uncompressed: a view into the window, or bytes."""
        section = view[at + HEADER_SIZE : at + header.size]
        codec = header.attributes & CODEC_MASK
        if codec:
            section = decompress(codec, section, path=segment.log_path, position=position + at)
        return section

    @staticmethod
    def _locate(segment, position: int, found: list) -> _Records:
        """:func:`_locate` for ``found`` = ``[(position in window, header, section), ...]``."""
        try:
            return _locate([f[2] for f in found], [f[1] for f in found])
        except _Malformed as error:
            raise CorruptBatchError(f"records do not parse: {error}", path=segment.log_path,
                                    position=position + found[error.batch][0]) from None

    @staticmethod
    def _offsets(records: _Records, found: list) -> np.ndarray:
        bases = np.array([f[1].base_offset for f in found], np.int64)
        return records.offset_deltas + np.repeat(bases, np.diff(records.first))

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
        writers: list[_SegmentWriter] = []
        try:
            for group in groups:
                sources = [self.segments[i] for i in group]
                writer = _SegmentWriter(self.log.directory, sources[0].base_offset, self.config, self.window_bytes)
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
            section = self._section(segment, view, position, at, header)
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
            records = self._locate(segment, position, found)
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
                    data = self._rebuilt(header, records, first + np.flatnonzero(kept), horizons[action])
            if action == _COPY:
                writer.add(header, view=view, at=at)
                self.records_kept += header.records_count
                self._note_horizon(header)
                continue
            self.changed = True
            if action == _DROP:
                if group_end is not None and position + at + header.size == group_end:
                    writer.add(header, _empty_batch(header))  # keeps the group's last offset
                continue
            rebuilt = batch_format.unpack_header(data)
            writer.add(rebuilt, data)
            self.records_kept += rebuilt.records_count
            self._note_horizon(rebuilt)

    def _keep(self, records: _Records, found: list, first_dirty: int) -> tuple[np.ndarray, list]:
        """The retention rule for every record of ``found``, and per batch the delete horizon
        to give it now (``None``: keep its own)."""
        end, now, values = self.end_offset, self.now_ms, self.sorted_values
        counts = np.diff(records.first)
        offsets = self._offsets(records, found)
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

    @staticmethod
    def _rebuilt(header: BatchHeader, records: _Records, rows: np.ndarray, new_horizon: int | None) -> bytes:
        """``header``'s batch holding only the records ``rows``, with a delete horizon if given."""
        attributes = header.attributes
        base_timestamp = header.base_timestamp
        if new_horizon is None:
            data = _gather(records, rows)
        else:
            data = _rebased(records, rows, base_timestamp, new_horizon)
            attributes |= DELETE_HORIZON_FLAG
            base_timestamp = new_horizon
        if attributes & LOG_APPEND_TIME_FLAG:
            max_timestamp = header.max_timestamp
        else:
            max_timestamp = _wrap64(header.base_timestamp + int(records.timestamp_deltas[rows].max()))
        return _assemble(header, data, count=len(rows), attributes=attributes, base_timestamp=base_timestamp,
                         max_timestamp=max_timestamp)

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
        section = self.work._section(segment, view, position, at, header)
        self.found.append((at, header, section))
        self.found_bytes += len(section)
        self.found_records += header.records_count
        if self.found_bytes >= self.work.window_bytes or self.found_records >= self.work.window_bytes // 64:
            self.end_window()

    def end_window(self) -> None:
        """Hash what was found (its views into the window are about to go)."""
        if self.found:
            work = self.work
            records = work._locate(self.segment, self.position, self.found)
            offsets = work._offsets(records, self.found)
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


def _remove_cleaned(directory: str, bases: list[int]) -> None:
    for base in bases:
        for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIMEINDEX_SUFFIX):
            try:
                os.unlink(segment_path(directory, base, suffix) + CLEANED_SUFFIX)
            except FileNotFoundError:
                pass


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
            _remove_cleaned(directory, bases)  # every batch was copied as it was: keep the old files
    except Exception:
        _remove_cleaned(directory, bases)
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
