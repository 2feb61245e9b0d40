"""Record encoding: the records section of a batch, before compression, from Python values.

The record layout is the one :mod:`logstore.batch`'s docstring specifies; this module writes it.
:func:`encode_records` checks and normalises keys, headers and timestamps, then picks a path: record
by record in Python for small batches (also the reference the fast paths are tested against,
byte for byte), 2-D rows for runs of identically laid-out records, or one ``b"".join`` of
vectorised varint prefixes. It is separate from :mod:`logstore.batch` because it is the bulk of
the codec's code and none of it concerns the batch header, the CRC or compression, which stay
there; it imports nothing from :mod:`logstore.batch`, which imports it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ._varint import (
    INT64_MAX,
    INT64_MIN,
    U64,
    scatter_varints,
    varint_bytes,
    varint_columns,
    varint_width,
    widths,
    zigzag_array,
)

__all__ = ["encode_records"]


def encode_records(values: list | tuple, keys, headers, timestamps_ms, *, reserve: int):
    """The uncompressed records of a batch holding ``values`` (non-empty), at offset deltas 0..n-1.

    ``keys``, ``headers`` and ``timestamps_ms`` are as :func:`logstore.batch.encode` takes them.
    Returns ``(buffer, start, base_timestamp, max_timestamp)`` with the records at
    ``buffer[start:]``: ``start`` is 0 for a ``bytes`` buffer, or ``reserve`` for a writable uint8
    array whose first ``reserve`` bytes are left for the caller to fill (the batch header: one
    copy less). Raises ValueError and TypeError as ``encode`` documents.
    """
    n = len(values)
    if keys is not None:
        if not isinstance(keys, list | tuple):
            keys = list(keys)
        if len(keys) != n:
            raise ValueError(f"keys has {len(keys)} entries for {n} values")
    header_blocks = None
    if headers is not None:
        if len(headers) != n:
            raise ValueError(f"headers has {len(headers)} entries for {n} values")
        if any(headers):
            header_blocks = [_header_block(h, i) for i, h in enumerate(headers)]
    small = n <= _SMALL_BATCH
    base_timestamp, max_timestamp, ts_deltas = _timestamps(timestamps_ms, n, small)
    if small:
        key_items = key_lengths = None
        if keys is not None:
            key_items, key_lengths = _normalize(keys, "keys")
        buffer, start = (
            _encode_small(*_normalize(values, "values"), key_items, key_lengths, header_blocks, ts_deltas),
            0,
        )
    else:
        if keys is None and header_blocks is None and isinstance(ts_deltas, int) and abs(_RUNS_PER_RECORD) < 1:
            # (The tests force the runs or joined path by setting _RUNS_PER_RECORD to +-10**9.)
            out = _encode_uniform(values, n, reserve)
            if out is not None:
                return out, reserve, base_timestamp, max_timestamp
        value_col = _byte_column(values, n, "values")
        key_col = None if keys is None else _byte_column(keys, n, "keys")
        buffer, start = _encode_columns(n, value_col, key_col, header_blocks, ts_deltas, reserve)
    return buffer, start, base_timestamp, max_timestamp


class _Column(NamedTuple):
    """Keys or values, prepared for encoding."""

    items: Sequence  # bytes-like per record (b"" in place of None)
    joined: bytes  # all items concatenated
    lengths: np.ndarray | int  # int64 per record, -1 for None; or one int for all


_EMPTY = b""


def _byte_column(seq: Sequence, n: int, what: str) -> _Column:
    # Fast path: every item is bytes-like and not None. len() for all in C, one join in C; the
    # join also rejects str. A memoryview with itemsize > 1 has len != byte count, caught below.
    try:
        lengths = np.fromiter(map(len, seq), dtype=np.int64, count=n)
        joined = b"".join(seq)
    except (TypeError, BufferError):
        return _byte_column_slow(seq, what)
    if len(joined) != int(lengths.sum()):
        return _byte_column_slow(seq, what)
    first = int(lengths[0])
    if (lengths == first).all():
        return _Column(seq, joined, first)
    return _Column(seq, joined, lengths)


def _normalize(seq: Sequence, what: str) -> tuple[list, list[int]]:
    """Items checked one by one: (bytes-like items with b"" for None, lengths with -1 for None)."""
    items = []
    lengths = []
    for i, item in enumerate(seq):
        if item is None:
            items.append(_EMPTY)
            lengths.append(-1)
            continue
        if type(item) is not bytes:
            if isinstance(item, str):
                raise TypeError(f"{what}[{i}] is a str; encode it to bytes first")
            try:
                view = memoryview(item)
            except TypeError:
                raise TypeError(
                    f"{what}[{i}] must be bytes-like or None, not {type(item).__name__}"
                ) from None
            if view.itemsize != 1 or not view.c_contiguous or view.ndim != 1:
                item = view.tobytes()
        items.append(item)
        lengths.append(len(item))
    return items, lengths


def _byte_column_slow(seq: Sequence, what: str) -> _Column:
    items, lengths = _normalize(seq, what)
    first = lengths[0]
    if lengths.count(first) == len(lengths):
        return _Column(items, b"".join(items), first)
    return _Column(items, b"".join(items), np.array(lengths, dtype=np.int64))


def _header_block(record_headers, i: int) -> bytes:
    """The header_count varint and headers of one record."""
    if not record_headers:
        return b"\x00"
    parts = [varint_bytes(len(record_headers))]
    for pair in record_headers:
        try:
            key, value = pair
        except (TypeError, ValueError):
            raise TypeError(f"headers[{i}] must hold (str, bytes | None) pairs, got {pair!r}") from None
        if not isinstance(key, str):
            raise TypeError(f"headers[{i}] key must be str, not {type(key).__name__}")
        # surrogateescape: header keys that were not valid UTF-8 when read come back byte-exact.
        key_bytes = key.encode("utf-8", "surrogateescape")
        parts.append(varint_bytes(len(key_bytes)))
        parts.append(key_bytes)
        if value is None:
            parts.append(b"\x01")  # varint -1
        else:
            if isinstance(value, str):
                raise TypeError(f"headers[{i}] value must be bytes-like or None, not str")
            try:
                value = memoryview(value).tobytes() if type(value) is not bytes else value
            except TypeError:
                raise TypeError(
                    f"headers[{i}] value must be bytes-like or None, not {type(value).__name__}"
                ) from None
            parts.append(varint_bytes(len(value)))
            parts.append(value)
    return b"".join(parts)


def _timestamps(timestamps_ms, n: int, small: bool) -> tuple[int, int, np.ndarray | list | int]:
    """(base_timestamp, max_timestamp, deltas): deltas is the int 0 when all are equal, else an
    int64 array (a list of ints when ``small``). Deltas wrap at 64 bits, as Java's long does."""
    if timestamps_ms is None:
        now = time.time_ns() // 1_000_000
        return now, now, 0
    if isinstance(timestamps_ms, int | np.integer) and not isinstance(timestamps_ms, bool):
        ts = int(timestamps_ms)
        if not INT64_MIN <= ts <= INT64_MAX:
            raise ValueError(f"timestamp {ts} does not fit in int64")
        return ts, ts, 0
    if isinstance(timestamps_ms, str | bytes | float):
        raise TypeError(
            f"timestamps_ms must be None, an int or a sequence of ints, not {type(timestamps_ms).__name__}"
        )
    if small and isinstance(timestamps_ms, list | tuple):
        if len(timestamps_ms) != n:
            raise ValueError(f"timestamps_ms has {len(timestamps_ms)} entries for {n} records")
        for ts in timestamps_ms:
            if not isinstance(ts, int | np.integer) or isinstance(ts, bool):
                raise TypeError(f"timestamps_ms must hold ints, not {type(ts).__name__}")
            if not INT64_MIN <= ts <= INT64_MAX:
                raise ValueError(f"timestamp {ts} does not fit in int64")
        base = int(timestamps_ms[0])
        deltas = [((int(ts) - base + 2**63) & 0xFFFF_FFFF_FFFF_FFFF) - 2**63 for ts in timestamps_ms]
        top = int(max(timestamps_ms))
        return (base, top, 0) if top == base and not any(deltas) else (base, top, deltas)
    try:
        array = np.asarray(timestamps_ms)
    except OverflowError:
        raise ValueError("a timestamp does not fit in int64") from None
    if array.dtype.kind not in "iu" or array.ndim != 1:
        if array.dtype == object:
            raise ValueError("timestamps_ms must hold ints that fit in int64")
        raise TypeError(f"timestamps_ms must be a sequence of ints, got dtype {array.dtype}")
    if len(array) != n:
        raise ValueError(f"timestamps_ms has {len(array)} entries for {n} records")
    if array.dtype == np.uint64 and (array > INT64_MAX).any():
        raise ValueError("a timestamp does not fit in int64")
    array = array.astype(np.int64, copy=False)
    base = int(array[0])
    with np.errstate(over="ignore"):
        deltas = array - array[0]
    if not deltas.any():
        return base, base, 0
    return base, int(array.max()), deltas.tolist() if small else deltas


# --- uniform batches: equal value lengths, no keys, no headers, one timestamp -------------------
#
# Then record i is [length][0x00 attributes][0x00 timestamp delta][offset delta i][0x01 key -1]
# [value length][value][0x00 header count], and everything but the value depends only on i and
# the value length. The bytes between value i-1 and value i (its header count, then record i's
# prefix) are kept per value length, so a batch is one bytearray join of those and the values:
# no per-record numpy work and no intermediate copy of the values.

_UNIFORM_MAX_RECORDS = 8192  # cached separators per value length (about 50 bytes each)
_UNIFORM_CACHED_LENGTHS = 16
# value length -> (separators, running byte totals of separators: ends[i] = len(b"".join(separators[:i])))
_uniform_separators: dict[int, tuple[list[bytes], list[int]]] = {}
_offset_varints: list[bytes] | None = None  # varint_bytes(i) for i < _UNIFORM_MAX_RECORDS, on first use


def _encode_uniform(values, n: int, reserve: int):
    """The records (after ``reserve`` zero bytes) as a writable uint8 array, or None when the
    values are not all bytes-like of one length (or there are too many): the caller falls back."""
    if n > _UNIFORM_MAX_RECORDS:
        return None
    try:
        lengths = set(map(len, values))
    except TypeError:  # None, or not sized
        return None
    if len(lengths) != 1:
        return None
    (value_len,) = lengths
    cached = _uniform_separators.get(value_len)
    if cached is None or len(cached[0]) < n:
        cached = _uniform_separators_for(value_len, n)
    separators, ends = cached
    parts = [None] * (2 * n + 1)
    parts[2 : 2 * n : 2] = separators[1:n]
    parts[0] = bytes(reserve) + separators[0][1:]  # record 0 has no previous header count
    parts[1 : 2 * n : 2] = values
    parts[2 * n] = b"\x00"
    try:
        joined = bytearray().join(parts)
    except (TypeError, BufferError):  # str, or a buffer that cannot be read as bytes
        return None
    # A memoryview whose len() is not its byte count shows up here (as _byte_column checks it).
    # (ends[n] counts separator 0's leading b"\x00", dropped above, in place of the final one.)
    if len(joined) != reserve + ends[n] + n * value_len:
        return None
    return np.frombuffer(joined, dtype=np.uint8)


def _uniform_separators_for(value_len: int, n: int) -> tuple[list[bytes], list[int]]:
    """Separator i (0 <= i < max(n, cached)): b"\x00" (header count of record i-1), then record
    i's prefix up to its value, for values of ``value_len`` bytes."""
    # Encoding runs outside the log's lock: each cache is replaced whole, never changed in place.
    global _offset_varints
    offsets = _offset_varints
    if offsets is None:
        _offset_varints = offsets = [varint_bytes(i) for i in range(_UNIFORM_MAX_RECORDS)]
    old = _uniform_separators.get(value_len)
    count = max(n, 0 if old is None else len(old[0]))
    value_head = varint_bytes(value_len)
    separators = []
    start = 0
    while start < count:
        off_width = len(offsets[start])
        end = start
        while end < count and len(offsets[end]) == off_width:
            end += 1
        # body: attributes, timestamp delta, offset delta, key length, value length, value, headers
        body = 3 + off_width + len(value_head) + value_len + 1
        head = b"\x00" + varint_bytes(body) + b"\x00\x00"
        tail = b"\x01" + value_head
        separators += [head + off + tail for off in offsets[start:end]]
        start = end
    if len(_uniform_separators) >= _UNIFORM_CACHED_LENGTHS:
        _uniform_separators.clear()
    ends = [0]
    total = 0
    for separator in separators:
        total += len(separator)
        ends.append(total)
    _uniform_separators[value_len] = cached = (separators, ends)
    return cached


# Up to this many records, plain Python per record (about 1 us each) beats the fixed cost of the
# numpy calls (20 us for the run path, 70 us for the join path). Encoding checks for runs above
# _SMALL_BATCH and still goes to Python below _SMALL_JOINED when there are none. (The tests force
# one path by setting _SMALL_BATCH, _SMALL_JOINED and _RUNS_PER_RECORD on this module.)
_SMALL_BATCH = 24
_SMALL_JOINED = 64


def _encode_small(value_items, value_lengths, key_items, key_lengths, header_blocks, ts_deltas) -> bytes:
    """Records one by one in Python: for small batches, and the reference for the fast paths.

    Items are bytes-like (b"" for None) and lengths are ints (-1 for None), as ``_normalize``
    returns them; ``key_items`` is None when there are no keys.
    """
    n = len(value_items)
    parts = []
    for i in range(n):
        head = b"".join(
            (
                b"\x00",  # attributes
                varint_bytes(ts_deltas if isinstance(ts_deltas, int) else ts_deltas[i]),
                varint_bytes(i),
                varint_bytes(-1 if key_items is None else key_lengths[i]),
            )
        )
        key = _EMPTY if key_items is None else key_items[i]
        value_head = varint_bytes(value_lengths[i])
        tail = b"\x00" if header_blocks is None else header_blocks[i]
        body = len(head) + len(key) + len(value_head) + len(value_items[i]) + len(tail)
        parts += (varint_bytes(body), head, key, value_head, value_items[i], tail)
    return b"".join(parts)


# The run path costs about 15 us a run (a dozen numpy calls), the join path about 70 us plus
# 0.2 us a record: runs win while there are at most 3 + n / 128 of them.
_RUNS_PER_RECORD = 1 / 128


def _encode_columns(n: int, values: _Column, keys: _Column | None, header_blocks, ts_deltas, reserve: int):
    """The concatenated, uncompressed records: ``(buffer, start)`` with the records at
    ``buffer[start:]``; ``start`` is ``reserve`` when room was left for the header."""
    z_off = np.arange(0, 2 * n, 2, dtype=U64)  # zigzag(i) = 2i for i >= 0
    w_off = widths(z_off)
    if isinstance(ts_deltas, int):
        z_ts, w_ts = 0, 1
    else:
        z_ts = zigzag_array(ts_deltas)
        w_ts = widths(z_ts)
    key_lengths = -1 if keys is None else keys.lengths

    if header_blocks is None:
        # Runs of records with identical layout: break wherever a width or length changes.
        change = np.diff(w_off) != 0
        for column in (w_ts, key_lengths, values.lengths):
            if not isinstance(column, int):
                change |= np.diff(column) != 0
        breaks = np.flatnonzero(change) + 1
        if len(breaks) + 1 <= 3 + n * _RUNS_PER_RECORD:
            return _encode_runs(n, values, keys, z_off, z_ts, breaks, reserve), reserve
    if n <= _SMALL_JOINED:
        deltas = z_ts if isinstance(z_ts, int) else ts_deltas.tolist()
        key_items = key_lengths = None
        if keys is not None:
            key_items, key_lengths = keys.items, _as_list(keys.lengths, n)
        return _encode_small(
            values.items, _as_list(values.lengths, n), key_items, key_lengths, header_blocks, deltas
        ), 0
    return _encode_joined(n, values, keys, header_blocks, z_off, w_off, z_ts, w_ts), 0


def _as_list(lengths, n: int) -> list[int]:
    return [lengths] * n if isinstance(lengths, int) else lengths.tolist()


def _column_at(column, i: int) -> int:
    return column if isinstance(column, int) else int(column[i])


def _encode_runs(n, values: _Column, keys: _Column | None, z_off, z_ts, breaks, reserve: int) -> np.ndarray:
    """Write each run of identically laid-out records as the rows of a 2-D uint8 array.

    A row is [length][attributes][timestamp delta][offset delta][key length][key][value length]
    [value][header count]. Within a run only the two deltas, the key and the value differ from
    row to row; everything else is one template row broadcast down the run. The first ``reserve``
    bytes of the returned array are left for the caller to fill.
    """
    bounds = [0, *breaks.tolist(), n]
    value_bytes = np.frombuffer(values.joined, dtype=np.uint8)
    value_starts = _byte_starts(values.lengths, n)
    if keys is not None:
        key_bytes = np.frombuffer(keys.joined, dtype=np.uint8)
        key_starts = _byte_starts(keys.lengths, n)
    ts_varies = not isinstance(z_ts, int)
    # First pass: each run's row layout, so the output is allocated once.
    layouts = []
    total = 0
    for a, b in zip(bounds, bounds[1:], strict=False):
        w_ts = varint_width(int(z_ts[a])) if ts_varies else 1
        w_off = varint_width(int(z_off[a]))
        key_len = -1 if keys is None else _column_at(keys.lengths, a)
        value_len = _column_at(values.lengths, a)
        key_head = varint_bytes(key_len)
        value_head = varint_bytes(value_len)
        # attributes, both deltas (placeholders: rewritten per row, or 0 when constant), key length
        deltas = bytes(1 + w_ts + w_off)
        body_len = len(deltas) + len(key_head) + max(key_len, 0) + len(value_head) + max(value_len, 0) + 1
        length_head = varint_bytes(body_len)
        head = length_head + deltas + key_head
        ts_col = len(length_head) + 1
        row_len = len(length_head) + body_len
        layout = (reserve + total, row_len, head, ts_col, w_ts, w_off, key_len, value_head, value_len)
        layouts.append((a, b, layout))
        total += (b - a) * row_len

    out = np.empty(reserve + total, dtype=np.uint8)
    for a, b, (start, row_len, head, ts_col, w_ts, w_off, key_len, value_head, value_len) in layouts:
        m = b - a
        rows = out[start : start + m * row_len].reshape(m, row_len)
        col = len(head)
        rows[:, :col] = np.frombuffer(head, dtype=np.uint8)
        if ts_varies:
            for j, byte in enumerate(varint_columns(z_ts[a:b], w_ts)):
                rows[:, ts_col + j] = byte
        off_col = ts_col + w_ts
        for j, byte in enumerate(varint_columns(z_off[a:b], w_off)):
            rows[:, off_col + j] = byte
        if key_len > 0:
            k0 = int(key_starts[a])
            rows[:, col : col + key_len] = key_bytes[k0 : k0 + m * key_len].reshape(m, key_len)
            col += key_len
        rows[:, col : col + len(value_head)] = np.frombuffer(value_head, dtype=np.uint8)
        col += len(value_head)
        if value_len > 0:
            v0 = int(value_starts[a])
            rows[:, col : col + value_len] = value_bytes[v0 : v0 + m * value_len].reshape(m, value_len)
            col += value_len
        rows[:, col] = 0  # header count
    return out


def _byte_starts(lengths, n: int) -> np.ndarray:
    """Where each item starts in the joined bytes (None items take no bytes)."""
    if isinstance(lengths, int):
        return np.arange(n, dtype=np.int64) * max(lengths, 0)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(np.maximum(lengths[:-1], 0), out=starts[1:])
    return starts


def _encode_joined(
    n, values: _Column, keys: _Column | None, header_blocks, z_off, w_off, z_ts, w_ts
) -> bytes:
    """General layout: compute every record's varint prefix at once, then one b"".join.

    Per record the pieces are [prefix, key, value-length, value, headers]. The prefix (length,
    attributes, timestamp delta, offset delta, key length -- plus the value length when there are
    no keys) is written for all records into one buffer and cut into slices. Without
    headers each record's header count (a 0 byte) is put at the front of the *next* prefix, so the
    list holds only prefixes and values.
    """
    key_lengths = np.full(n, -1, np.int64) if keys is None else keys.lengths
    if isinstance(key_lengths, int):
        key_lengths = np.full(n, key_lengths, np.int64)
    value_lengths = values.lengths
    if isinstance(value_lengths, int):
        value_lengths = np.full(n, value_lengths, np.int64)
    z_key = zigzag_array(key_lengths)
    w_key = widths(z_key)
    z_value = zigzag_array(value_lengths)
    w_value = widths(z_value)
    if header_blocks is None:
        header_lengths = 1
    else:
        header_lengths = np.fromiter(map(len, header_blocks), dtype=np.int64, count=n)
    body = (
        1
        + w_ts
        + w_off
        + w_key
        + np.maximum(key_lengths, 0)
        + w_value
        + np.maximum(value_lengths, 0)
        + header_lengths
    )
    z_body = zigzag_array(body)
    w_body = widths(z_body)

    # Prefix buffer layout per record: [0x00 of the previous record's header count, when merged]
    # [length][attributes][timestamp delta][offset delta][key length] [value length].
    merge_zero = header_blocks is None
    lead = np.ones(n, np.int64) if merge_zero else np.zeros(n, np.int64)
    if merge_zero:
        lead[0] = 0
    prefix_len = lead + w_body + 1 + w_ts + w_off + w_key
    piece_len = prefix_len + w_value
    piece_start = np.zeros(n, np.int64)
    np.cumsum(piece_len[:-1], out=piece_start[1:])
    buf = np.zeros(int(piece_len.sum()), dtype=np.uint8)
    pos = piece_start + lead
    scatter_varints(buf, pos, z_body, w_body)
    pos = pos + w_body + 1  # attributes byte stays 0
    if not isinstance(z_ts, int):
        scatter_varints(buf, pos, z_ts, w_ts)
    pos = pos + w_ts
    scatter_varints(buf, pos, z_off, w_off)
    pos = pos + w_off
    scatter_varints(buf, pos, z_key, w_key)
    pos = pos + w_key
    scatter_varints(buf, pos, z_value, w_value)

    pieces = buf.tobytes()
    starts = piece_start.tolist()
    # (A list comprehension of slices is about twice as fast as map(getitem, map(slice, ...)).)
    if keys is None:
        prefixes = [pieces[a:b] for a, b in zip(starts, (piece_start + piece_len).tolist(), strict=True)]
        per_record = [prefixes, values.items]
    else:
        mids = (piece_start + prefix_len).tolist()
        prefixes = [pieces[a:b] for a, b in zip(starts, mids, strict=True)]
        value_heads = [pieces[a:b] for a, b in zip(mids, (piece_start + piece_len).tolist(), strict=True)]
        per_record = [prefixes, keys.items, value_heads, values.items]
    if header_blocks is not None:
        per_record.append(header_blocks)
    stride = len(per_record)
    parts = [None] * (stride * n)
    for i, column in enumerate(per_record):
        parts[i::stride] = column
    if merge_zero:
        parts.append(b"\x00")
    return b"".join(parts)
