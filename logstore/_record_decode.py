"""Record decoding: the records section of a batch, after decompression, into columns.

The record layout is the one :mod:`logstore.batch`'s docstring specifies; this module reads it and
enforces its framing rules (fields end exactly at each record's length, exactly records_count
records fill the section). :func:`decode_records` reads small batches record by record in Python
(also the reference the vectorised path is tested against, result for result and error for
error) and larger ones with numpy: record starts found run by run, every field gathered for all
records at once, runs of equally spaced values cut out with one ``struct`` call. It is separate
from :mod:`logstore.batch` because none of it concerns the batch header, the CRC or compression;
it imports nothing from :mod:`logstore.batch`, which imports it and turns :class:`RecordError`
into ``CorruptBatchError`` with the batch's path and position.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from ._varint import U64, read_varint, unzigzag, zigzag

__all__ = ["RecordError", "decode_records", "decode_records_many"]

# The smallest record: length, attributes, timestamp delta, offset delta, key length, value length
# and header count, one byte each. Bounds records_count before anything is allocated.
_MIN_RECORD_SIZE = 7
# Up to this many records, plain Python per record (about 1 us each) beats the fixed cost of the
# numpy calls (about 60 us). (The tests force one path by setting _SMALL_DECODE on this module.)
_SMALL_DECODE = 64


class RecordError(Exception):
    """Internal: record framing is wrong (re-raised as CorruptBatchError with path/position)."""


def decode_records(data: bytes, start: int, end: int, count: int, *, payloads: bool = True):
    """The ``count`` records in ``data[start:end]`` as ``(offset deltas, timestamp deltas, keys,
    values, headers)``: two int64 arrays, then lists. RecordError when the framing is wrong.
    With ``payloads=False`` keys and values may come back as None (not made) instead of lists;
    the framing is checked all the same."""
    if count < 0:
        raise RecordError(f"records_count {count} is negative")
    if count == 0:
        if start != end:
            raise RecordError(f"{end - start} bytes of records in a batch that says it holds none")
        empty = np.zeros(0, np.int64)
        return empty, empty, [], [], []
    if count * _MIN_RECORD_SIZE > end - start:
        raise RecordError(f"records_count {count} cannot fit in {end - start} bytes of records")
    if count <= _SMALL_DECODE:
        return _decode_small(data, start, end, count)
    array = np.frombuffer(data, dtype=np.uint8)
    starts, length_widths = _record_starts(data, start, end, count)
    return _decode_fields(data, array, starts[:count], length_widths, starts[1:], count, start, payloads)


def decode_records_many(data: bytes, regions: list[tuple[int, int, int]]):
    """The records of several record sections of ``data``, each ``(start, end, count)`` with
    ``count >= 1``, decoded together in one vectorised pass: ``(offset deltas, timestamp deltas,
    keys, values, headers)`` of all of them, in order. For bulk reads of many uncompressed
    batches: the fixed cost of the numpy calls is paid once, not once per batch.

    RecordError when any framing is wrong; its message does not say which section (callers decode
    section by section with :func:`decode_records` to report the damage precisely).
    """
    total = 0
    for start, end, count in regions:
        if count < 1 or count * _MIN_RECORD_SIZE > end - start:
            raise RecordError("bad records_count")
        total += count
    array = np.frombuffer(data, dtype=np.uint8)
    try:
        record_start, length_widths, record_end = _many_record_starts(data, array, regions, total)
    except RecordError:
        # A guessed layout was wrong (sections of equal size and count laid out differently):
        # walk every section.
        record_start, length_widths, record_end = _many_record_starts(data, array, regions, total, guess=False)
    return _decode_fields(data, array, record_start, length_widths, record_end, total, 0)


def _many_record_starts(data: bytes, array: np.ndarray, regions, total: int, *, guess: bool = True):
    """(start, length varint width, end) of every record of every section, as int64 arrays.

    Sections are walked with :func:`_record_starts`, except that (with ``guess``) a section with
    as many records and bytes as one walked before is taken to be laid out like it (a producer's
    batches of equally sized values are): its starts are that section's, shifted. Guesses are
    then checked all at once against the length varint of every record (RecordError if wrong).
    """
    first_start, first_end, first_count = regions[0]
    if guess and len(regions) > 1 and all(end - start == first_end - first_start and count == first_count for start, end, count in regions):
        # all sections alike (the usual bulk read): one walk, then the others by broadcasting
        starts, widths = _record_starts(data, first_start, first_end, first_count)
        offsets = np.array([start - first_start for start, _end, _count in regions], np.int64)[:, None]
        record_start = (starts[:first_count] + offsets).ravel()
        record_end = (starts[1:] + offsets).ravel()
        # every section's length varints must be byte for byte those of the walked one
        rows = record_start.reshape(len(regions), first_count)
        for j in range(int(widths.max())):
            columns = np.flatnonzero(widths > j) if j else slice(None)
            template = array[starts[:first_count][columns] + j]
            if not (array[rows[:, columns] + j] == template).all():
                raise RecordError("record lengths do not match their positions")
        return record_start, np.tile(widths, len(regions)), record_end
    starts_parts: list = []
    widths_parts: list = []
    ends_parts: list = []
    layouts: dict = {}  # (count, bytes) -> (starts relative to the section, widths)
    guessed = False
    for start, end, count in regions:
        layout = layouts.get((count, end - start)) if guess else None
        if layout is None:
            starts, widths = _record_starts(data, start, end, count)
            layouts[count, end - start] = (starts - start, widths)
        else:
            starts, widths = layout[0] + start, layout[1]
            guessed = True
        starts_parts.append(starts[:count])
        widths_parts.append(widths)
        ends_parts.append(starts[1:])
    if len(regions) == 1:
        return starts_parts[0], widths_parts[0], ends_parts[0]
    record_start = np.concatenate(starts_parts)
    record_width = np.concatenate(widths_parts)
    record_end = np.concatenate(ends_parts)
    if guessed:
        _check_guessed(array, record_start, record_end, record_width)
    return record_start, record_width, record_end


def _check_guessed(array: np.ndarray, record_start: np.ndarray, record_end: np.ndarray, record_width: np.ndarray):
    """RecordError unless the length varint of every record says exactly its guessed size."""
    # (The walked sections' varints are as wide as found, so equal bytes mean equal values.)
    if record_width.max() <= 2:
        z = (record_end - record_start - record_width) << 1  # the zigzagged length
        two = record_width == 2
        expected = np.where(two, (z & 0x7F) | 0x80, z)
        ok = np.array_equal(array[record_start], expected)
        if ok and two.any():
            second = record_start[two] + 1
            ok = np.array_equal(array[second], z[two] >> 7)
    else:
        raw, width = _gather_varints(array, record_start, record_end, 5, "length")
        ok = not (
            (raw & U64(1)).any()
            or not (record_width == width).all()
            or not np.array_equal(record_start + record_width + (raw >> U64(1)).astype(np.int64), record_end)
        )
    if not ok:
        raise RecordError("record lengths do not match their positions")


class FieldLayout(NamedTuple):
    """Where every field of every record lies (int64 arrays over ``data``), and the raw varints."""

    ts_start: np.ndarray
    ts_width: np.ndarray | int
    ts_raw: np.ndarray
    off_raw: np.ndarray
    key_start: np.ndarray
    key_len: np.ndarray  # -1: null
    value_start: np.ndarray
    value_len: np.ndarray  # -1: null
    header_count_raw: np.ndarray
    headers_start: np.ndarray  # just past the header count


def field_layout(array: np.ndarray, record_start, length_widths, record_end) -> FieldLayout:
    """Every field's position for records whose starts and ends are known (RecordError when a
    field runs past its record's end or a length is negative below -1)."""
    pos = record_start + length_widths + 1  # skip the length and the attributes byte
    _check_inside(pos, record_end, "attributes")
    ts_start = pos
    ts_raw, ts_width = _gather_varints(array, pos, record_end, 10, "timestamp delta")
    pos = pos + ts_width
    off_raw, width = _gather_varints(array, pos, record_end, 5, "offset delta")
    pos = pos + width
    key_raw, width = _gather_varints(array, pos, record_end, 5, "key length")
    key_start = pos + width
    key_len = _lengths(key_raw, "key length")
    pos = key_start + np.maximum(key_len, 0)
    _check_inside(pos, record_end, "value length")
    value_raw, width = _gather_varints(array, pos, record_end, 5, "value length")
    value_start = pos + width
    value_len = _lengths(value_raw, "value length")
    pos = value_start + np.maximum(value_len, 0)
    _check_inside(pos, record_end, "header count")
    hc_raw, width = _gather_varints(array, pos, record_end, 5, "header count")
    return FieldLayout(ts_start, ts_width, ts_raw, off_raw, key_start, key_len, value_start, value_len, hc_raw,
                       pos + width)


def _decode_fields(data, array, record_start, length_widths, record_end, count, start, payloads=True):
    layout = field_layout(array, record_start, length_widths, record_end)
    pos = layout.headers_start
    hc_raw = layout.header_count_raw
    headers = [()] * count
    if hc_raw.any():
        header_counts = unzigzag(hc_raw)
        if (header_counts < 0).any():
            raise RecordError(f"record {_first(header_counts < 0)}: negative header count")
        ends = record_end.tolist()
        for i in np.flatnonzero(header_counts).tolist():
            headers[i], pos[i] = _read_headers(data, int(pos[i]), ends[i], int(header_counts[i]), i)
    if not (pos == record_end).all():
        bad = _first(pos != record_end)
        raise RecordError(
            f"record {bad}: fields end at byte {int(pos[bad]) - start} but its length says {int(record_end[bad]) - start}"
        )
    if not payloads:
        return unzigzag(layout.off_raw), unzigzag(layout.ts_raw), None, None, headers
    keys = _cut(data, layout.key_start, layout.key_len, count)
    values = _cut(data, layout.value_start, layout.value_len, count)
    return unzigzag(layout.off_raw), unzigzag(layout.ts_raw), keys, values, headers


def _decode_small(data: bytes, start: int, end: int, count: int):
    """Records one by one in Python: for small batches, and the reference for the fast path.

    One-byte varints (nearly every field of a small record) are decoded inline; anything longer
    goes through ``read_varint``. Reading past ``record_end`` raises, so bounds hold throughout.
    """
    offset_deltas, timestamp_deltas, keys, values, headers = [], [], [], [], []
    pos = start
    read = read_varint
    try:
        for i in range(count):
            b = data[pos] if pos < end else 0xFF
            if b < 0x80:
                length, pos = b >> 1 if not b & 1 else -1, pos + 1
            else:
                length, pos = read(data, pos, end, 5)
            record_end = pos + length
            if length < 1 or record_end > end:
                raise ValueError(f"length {length} does not fit in the batch")
            pos += 1  # attributes
            b = data[pos] if pos < record_end else 0xFF
            if b < 0x80:
                timestamp_deltas.append((b >> 1) ^ -(b & 1))
                pos += 1
            else:
                delta, pos = read(data, pos, record_end, 10)
                timestamp_deltas.append(delta)
            b = data[pos] if pos < record_end else 0xFF
            if b < 0x80:
                offset_deltas.append((b >> 1) ^ -(b & 1))
                pos += 1
            else:
                delta, pos = read(data, pos, record_end, 5)
                offset_deltas.append(delta)
            b = data[pos] if pos < record_end else 0xFF
            if b < 0x80:
                size, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                size, pos = read(data, pos, record_end, 5)
            if size < 0:
                if size != -1:
                    raise ValueError(f"key length {size}")
                keys.append(None)
            else:
                keys.append(data[pos : pos + size])
                pos += size
            b = data[pos] if pos < record_end else 0xFF
            if b < 0x80:
                size, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                size, pos = read(data, pos, record_end, 5)
            if size < 0:
                if size != -1:
                    raise ValueError(f"value length {size}")
                values.append(None)
            else:
                values.append(data[pos : pos + size])
                pos += size
            b = data[pos] if pos < record_end else 0xFF
            if b == 0:
                headers.append(())
                pos += 1
            else:
                header_count, pos = read(data, pos, record_end, 5)
                if header_count < 0:
                    raise ValueError(f"header count {header_count}")
                record_headers, pos = _read_headers(data, pos, record_end, header_count, i)
                headers.append(record_headers)
            if pos != record_end:
                raise ValueError(f"fields end at {pos - start}, its length says {record_end - start}")
    except ValueError as error:
        raise RecordError(f"record {i}: {error}") from None
    if pos != end:
        raise RecordError(f"{end - pos} bytes left after the last of {count} records")
    return (
        np.array(offset_deltas, dtype=np.int64),
        np.array(timestamp_deltas, dtype=np.int64),
        keys,
        values,
        headers,
    )


def _first(mask: np.ndarray) -> int:
    return int(np.argmax(mask))


def _check_inside(pos: np.ndarray, record_end: np.ndarray, field: str) -> None:
    if (pos >= record_end).any():
        raise RecordError(f"record {_first(pos >= record_end)}: {field} lies past the end of the record")


def _gather_varints(array: np.ndarray, pos: np.ndarray, limit: np.ndarray, max_bytes: int, field: str):
    """Decode one varint at each ``pos`` (all already checked < ``limit``).

    Returns (raw zigzag values as uint64, widths as an int64 array or the int 1). A round per
    byte position, over all records at once; one-byte fields cost one gather.
    """
    byte = array[pos]
    if byte.max() < 0x80:
        return byte.astype(U64), 1
    more = byte >> 7  # 1 where the varint continues
    if max_bytes > 1:
        # Fields of at most two bytes (the usual case past one byte): one more gather, small types.
        at = pos + 1
        if np.count_nonzero((at >= limit) & more.view(bool)):
            bad = _first((at >= limit) & more.view(bool))
            raise RecordError(f"record {bad}: {field} runs past the end of the record")
        second = array[np.minimum(at, len(array) - 1)] * more
        if second.max() < 0x80:
            raw16 = (byte & 0x7F).astype(np.uint16) | (second.astype(np.uint16) << 7)
            return raw16.astype(U64), more.astype(np.int64) + 1
    raw = (byte & 0x7F).astype(U64)
    width = more.astype(np.int64) + 1
    last = len(array) - 1
    for j in range(1, max_bytes):
        at = pos + j
        if np.count_nonzero((at >= limit) & more.view(bool)):
            bad = _first((at >= limit) & more.view(bool))
            raise RecordError(f"record {bad}: {field} runs past the end of the record")
        # Finished varints read some byte and multiply it away; clamp so nothing reads past the end.
        byte = array[np.minimum(at, last)] * more
        if j == 9 and byte.max() > 1:
            raise RecordError(f"record {_first(byte > 1)}: {field} overflows 64 bits")
        raw |= (byte & 0x7F).astype(U64) << U64(7 * j)
        more = byte >> 7
        if not more.any():
            break
        width += more
    else:
        raise RecordError(f"record {_first(more.view(bool))}: {field} is longer than {max_bytes} bytes")
    if max_bytes == 5 and raw.max() >> U64(32):
        raise RecordError(f"record {_first((raw >> U64(32)) != 0)}: {field} overflows 32 bits")
    return raw, width


def _lengths(raw: np.ndarray, field: str) -> np.ndarray:
    """Zigzag-decode lengths that may be -1 (null) but not below; int64."""
    if raw.min() == 1 == raw.max():  # all null
        return np.full(len(raw), -1, np.int64)
    lengths = (raw >> U64(1)).astype(np.int64)
    odd = (raw & U64(1)).astype(bool)
    if odd.any():
        if np.count_nonzero(raw[odd] != 1):
            raise RecordError(f"record {_first(odd & (raw != 1))}: negative {field}")
        lengths[odd] = -1
    return lengths


# Record starts: lengths chain (each record starts where the previous one's length says), so the
# walk is sequential, and in Python it costs about 0.2 us a record. Runs make it cheap: when three
# records in a row have the same size, take the rest of the batch as a 2-D view of rows of that
# size and compare the length bytes of every row with the first at once; every row that matches
# is a record of that size. Probes grow 4x while runs last, so a uniform batch of n records takes
# about log4(n / 512) numpy calls. A batch whose sizes keep changing is walked in plain Python:
# three equal sizes in a row are then rare, so little is lost on probes that find short runs.
_PROBE_ROWS = 512
_PROBE_DTYPES = {1: ("u1", 0), 2: ("<u2", 0), 3: ("<u4", 0xFFFFFF), 4: ("<u4", 0), 5: ("<u8", 0xFF_FFFF_FFFF)}


def _record_starts(data: bytes, start: int, end: int, count: int):
    """(start of every record plus ``end`` as entry ``count``, width of every length varint).

    Checks that the records exactly fill ``start .. end``.
    """
    starts = np.empty(count + 1, np.int64)
    widths = np.empty(count, np.int64)
    stepped: list[int] = []  # starts found one by one, not yet copied into ``starts``
    stepped_widths: list[int] = []
    stepped_from = 0
    i = 0
    pos = start
    previous_row = -1
    streak = 0
    cap = _PROBE_ROWS
    append = stepped.append
    append_width = stepped_widths.append
    while i < count:
        # No bounds checks in the step: positions only grow (every record is at least one byte),
        # so overrunning ``end`` shows up in the final ``pos != end`` check, and reading past the
        # buffer raises IndexError, which decode_columns reports as damage.
        first = data[pos]
        if first < 0x80:
            width, raw = 1, first
        else:
            second = data[pos + 1]
            if second < 0x80:
                width, raw = 2, (first & 0x7F) | (second << 7)
            else:
                try:
                    length, after = read_varint(data, pos, end, 5)
                except ValueError as error:
                    raise RecordError(f"record {i}: length {error}") from None
                width, raw = after - pos, zigzag(length)
        if raw & 1:
            raise RecordError(f"record {i}: negative length {-(raw >> 1) - 1}")
        row = width + (raw >> 1)
        if row != previous_row:
            streak = 0
        elif streak < 1:
            streak = 1
        elif row >= 8:  # (the probe below reads up to 8 bytes of each row)
            # the third record of this size in a row: probe for a run
            if pos + row > end:
                raise RecordError(f"record {i}: length {raw >> 1} runs past the end of the batch")
            if stepped:
                starts[stepped_from : stepped_from + len(stepped)] = stepped
                widths[stepped_from : stepped_from + len(stepped)] = stepped_widths
                stepped.clear()
                stepped_widths.clear()
            rows = min(count - i, (end - pos) // row, cap)
            # The length varint of every row, read as one little-endian integer through a strided
            # view (no copy); widths 3 and 5 read a byte or three more, still inside the record.
            dtype, mask = _PROBE_DTYPES[width]
            lengths = np.ndarray((rows,), dtype, data, pos, (row,))
            if mask:
                lengths = lengths & mask
            same = lengths == lengths[0]
            run = rows if same.all() else int(np.argmin(same))
            starts[i : i + run] = np.arange(pos, pos + run * row, row, dtype=np.int64)
            widths[i : i + run] = width
            i += run
            pos += run * row
            stepped_from = i
            if run == rows:
                cap *= 4
            else:
                cap = _PROBE_ROWS
                streak = 0
            continue
        append(pos)
        append_width(width)
        i += 1
        pos += row
        previous_row = row
    if stepped:
        starts[stepped_from : stepped_from + len(stepped)] = stepped
        widths[stepped_from : stepped_from + len(stepped)] = stepped_widths
    if pos != end:
        if pos > end:
            raise RecordError(f"the records run past the end of the batch (record {i} of {count})")
        raise RecordError(f"{end - pos} bytes left after the last of {count} records")
    starts[count] = end
    return starts, widths


def _read_headers(data: bytes, pos: int, end: int, header_count: int, i: int):
    if header_count > (end - pos) // 2:  # each header takes at least two bytes
        raise RecordError(f"record {i}: {header_count} headers cannot fit in the record")
    result = []
    try:
        for _ in range(header_count):
            key_len, pos = read_varint(data, pos, end, 5)
            if key_len < 0 or pos + key_len > end:
                raise RecordError(f"record {i}: header key length {key_len} does not fit")
            key = data[pos : pos + key_len].decode("utf-8", "surrogateescape")
            pos += key_len
            value_len, pos = read_varint(data, pos, end, 5)
            if value_len < -1 or pos + value_len > end:
                raise RecordError(f"record {i}: header value length {value_len} does not fit")
            if value_len == -1:
                value = None
            else:
                value = data[pos : pos + value_len]
                pos += value_len
            result.append((key, value))
    except ValueError as error:
        raise RecordError(f"record {i}: header {error}") from None
    return tuple(result), pos


# Cutting values out: a list comprehension of slices costs ~50 ns a value. Where consecutive
# values have the same length and the same distance apart (runs of identically laid-out records),
# one struct.unpack_from with a repeated "{length}s{gap}x" format makes them all in C, ~10 ns each.
_CUT_ROWS = 256
_MIN_CUT_RUN = 16


@lru_cache(maxsize=256)
def _rows_struct(length: int, stride: int, rows: int) -> struct.Struct:
    return struct.Struct(f"{length}s{stride - length}x" * (rows - 1) + f"{length}s")


def _cut(data: bytes, starts: np.ndarray, lengths: np.ndarray, count: int) -> list:
    """``data[start:start + length]`` for every record, None where the length is -1."""
    nulls = lengths < 0
    if nulls.all():
        return [None] * count
    if count >= 2 * _MIN_CUT_RUN:
        gaps = np.diff(starts)
        breaks = lengths[1:] != lengths[:-1]
        breaks[1:] |= gaps[1:] != gaps[:-1]
        bounds = np.flatnonzero(breaks) + 1
        if (len(bounds) + 1) * _MIN_CUT_RUN <= count:
            return _cut_runs(data, starts, lengths, gaps, [0, *bounds.tolist(), count])
    out = [
        data[a:b] for a, b in zip(starts.tolist(), (starts + np.maximum(lengths, 0)).tolist(), strict=True)
    ]
    if nulls.any():
        for i in np.flatnonzero(nulls).tolist():
            out[i] = None
    return out


def _cut_runs(
    data: bytes, starts: np.ndarray, lengths: np.ndarray, gaps: np.ndarray, bounds: list[int]
) -> list:
    # Within [a, b) every length is equal and every start is gaps[a] after the previous one.
    out: list = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        length = int(lengths[a])
        if length < 0:
            out += [None] * (b - a)
            continue
        stride = int(gaps[a]) if b - a > 1 else length
        if b - a < _MIN_CUT_RUN or stride < length:
            out += [data[s : s + length] for s in starts[a:b].tolist()]
            continue
        first = int(starts[a])
        for k in range(0, b - a, _CUT_ROWS):
            rows = min(_CUT_ROWS, b - a - k)
            out += _rows_struct(length, stride, rows).unpack_from(data, first + k * stride)
    return out
