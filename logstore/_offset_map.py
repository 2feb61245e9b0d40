"""Key hash -> latest offset: 128-bit key hashes computed in bulk with numpy, and the
fixed-memory map (:class:`OffsetMap`) a cleaner pass fills with them.

Kept apart from :mod:`logstore.cleaner` because it knows nothing of segments, batches or passes
-- bytes and offsets in, offsets out -- and is tested on its own (collisions, probing, capacity).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._varint import U64

__all__ = ["HASH_PADDING", "OffsetMap", "hash_keys", "hash_key_list"]


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
HASH_PADDING = bytes(8)  #: what :func:`hash_keys` needs after the last key of its buffer


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
    return hash_keys(b"".join([*keys, HASH_PADDING]), np.cumsum(lengths) - lengths, lengths, seeds)


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

