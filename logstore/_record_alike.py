"""Record sections laid out alike: a bulk read of many batches decoded from one template.

A producer that sends equally sized values fills batch after batch with records framed byte for
byte alike: the same record lengths, offset deltas 0..n-1, the same key and value lengths, no
headers. Only the payloads, and often the timestamp deltas, differ. When a read spans such
batches (evenly spaced in the segment, as equal batches written one after another are),
:func:`decode_records_alike` decodes the first section with the general path of
:mod:`logstore._record_decode` (every framing rule checked) and then checks every other section
against it in one comparison of its *framing bytes*: every byte except key and value payloads
and timestamp deltas. Timestamp-delta bytes must show the same varint continuation bits (so the
same widths). When all of that holds, the other sections have exactly the first one's layout, so

* their offset deltas, key and value lengths are the first section's,
* their keys and values are cut with one cached ``struct`` per section (in C, no per-record
  Python work), and
* their timestamp deltas are read at the first section's positions, all sections at once.

Anything else (unequal sections, uneven spacing, headers, a mix of null and non-null keys or
values, any framing byte that differs) returns None, and the caller decodes generally; so the
result is always exactly what :func:`logstore._record_decode.decode_records_many` returns.
:func:`decode_records_runs` (what reads call) applies the template to every run of alike
batches in a read range and decodes the batches between runs generally.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from ._record_decode import _MIN_RECORD_SIZE, RecordError, _record_starts, decode_records_many, field_layout
from ._varint import U64, unzigzag

__all__ = ["decode_records_alike", "decode_records_runs"]


# A run shorter than this is not worth a template's fixed cost (a few numpy calls).
_MIN_RUN = 4


def decode_records_runs(data: bytes, regions: list[tuple[int, int, int]]):
    """The records of all sections, as :func:`logstore._record_decode.decode_records_many`
    returns them: runs of at least ``_MIN_RUN`` alike, back-to-back sections are decoded by
    template (:func:`decode_records_alike`), everything between them by ``decode_records_many``
    (whose RecordError passes through). A producer's batches are mostly alike with an odd one
    now and then (a linger-triggered partial batch): the odd one no longer costs the whole read
    the template."""
    parts = []
    loose = 0  # first section not decoded yet
    i = 0
    while i < len(regions):
        j = _run_end(regions, i)
        if j - i >= _MIN_RUN:
            decoded = decode_records_alike(data, regions[i:j])
            if decoded is not None:
                if loose < i:
                    parts.append(decode_records_many(data, regions[loose:i]))
                parts.append(decoded)
                loose = j
        i = j
    if loose == 0:
        return decode_records_many(data, regions)
    if loose < len(regions):
        parts.append(decode_records_many(data, regions[loose:]))
    if len(parts) == 1:
        return parts[0]
    keys, values, headers = [], [], []
    for part in parts:
        keys += part[2]
        values += part[3]
        headers += part[4]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), keys, values, headers


def _run_end(regions, i: int) -> int:
    """The end (exclusive) of the run of sections like ``regions[i]``: same size and count,
    each the same distance after the one before."""
    start, end, count = regions[i]
    j = i + 1
    if j == len(regions):
        return j
    spacing = regions[j][0] - start
    while j < len(regions):
        s, e, c = regions[j]
        if c != count or e - s != end - start or s - regions[j - 1][0] != spacing:
            break
        j += 1
    return j


class _Template(NamedTuple):
    """What one section's parse tells about every section framed byte for byte like it."""

    size: int
    count: int
    columns: np.ndarray  # framing byte positions, relative to a section's start
    framing: np.ndarray  # their values
    ts_at: np.ndarray  # timestamp delta positions
    ts_width: np.ndarray  # and widths (continuation bits: width - 1 bytes >= 0x80, then one below)
    max_width: int
    keys_null: bool  # all keys null (else none is)
    values_null: bool
    cut: Callable | None  # struct unpack_from of the non-null keys and values, interleaved
    offset_deltas: np.ndarray


# Templates of recent reads by (section size, record count): a consumer reads batch after batch
# framed alike, and parsing the first section costs more than checking all of them. A template
# is used only when every section of the new read matches its framing bytes, the same check the
# sections after the first always pass, so a cached one decides nothing a fresh one would not.
_TEMPLATES: dict[tuple[int, int], _Template] = {}
_MAX_TEMPLATES = 16


def _template(data: bytes, start: int, end: int, count: int) -> _Template | None:
    """The template of the section ``data[start:end]`` (``count`` records), after the general
    path's framing checks; None when they fail or the section has headers or a mix of null and
    non-null keys or values (left to the general path)."""
    array = np.frombuffer(data, dtype=np.uint8)
    try:
        starts, widths = _record_starts(data, start, end, count)
        layout = field_layout(array, starts[:count], widths, starts[1:])
    except (RecordError, IndexError, ValueError):
        return None
    if layout.header_count_raw.any() or not np.array_equal(layout.headers_start, starts[1:]):
        return None  # headers (or a header count past the record): left to the general path
    key_null, value_null = layout.key_len < 0, layout.value_len < 0
    if key_null.any() and not key_null.all() or value_null.any() and not value_null.all():
        return None
    ts_width = np.broadcast_to(np.asarray(layout.ts_width, np.int64), (count,))
    columns = _framing_columns(layout, starts, ts_width, start)
    cut = None
    if not (key_null.all() and value_null.all()):
        cut_at, cut_len = [], []
        if not key_null.all():
            cut_at.append(layout.key_start - start)
            cut_len.append(layout.key_len)
        if not value_null.all():
            cut_at.append(layout.value_start - start)
            cut_len.append(layout.value_len)
        cut = _section_struct(
            np.stack(cut_at, axis=1).ravel().tobytes(), np.stack(cut_len, axis=1).ravel().tobytes()
        ).unpack_from
    return _Template(end - start, count, columns, array[start + columns], layout.ts_start - start, ts_width,
                     int(ts_width.max()), bool(key_null.all()), bool(value_null.all()), cut,
                     unzigzag(layout.off_raw))


def decode_records_alike(data: bytes, regions: list[tuple[int, int, int]]):
    """The records of the sections ``(start, end, count)`` of ``data`` as ``(offset deltas,
    timestamp deltas, keys, values, headers)`` (as ``decode_records_many`` returns them), when
    there are at least two sections, all alike and evenly spaced (see the module docstring);
    None otherwise, or when the first section's framing is wrong (the general path then reports
    it)."""
    sections = len(regions)
    if sections < 2:
        return None
    start, end, count = regions[0]
    size = end - start
    if count < 1 or count * _MIN_RECORD_SIZE > size:
        return None
    spacing = regions[1][0] - start
    if spacing < size:
        return None
    expected = start
    for region_start, region_end, region_count in regions:
        if region_start != expected or region_end - region_start != size or region_count != count:
            return None
        expected += spacing
    if start + (sections - 1) * spacing + size > len(data):
        return None

    # Every section as a row of one strided view over data (no copy).
    rows = np.ndarray((sections, size), np.uint8, data, start, (spacing, 1))
    template = _TEMPLATES.get((size, count))
    if template is None or not (rows[:, template.columns] == template.framing).all():
        template = _template(data, start, end, count)
        if template is None:
            return None
        if not (rows[1:, template.columns] == template.framing).all():
            return None
        if len(_TEMPLATES) >= _MAX_TEMPLATES:
            _TEMPLATES.clear()
        _TEMPLATES[(size, count)] = template

    ts_at, ts_width, max_width = template.ts_at, template.ts_width, template.max_width
    if max_width >= 10:
        return None  # (a 10-byte varint needs an overflow check: left to the general path)
    if max_width == 1:  # (the usual case: every delta below 64 ms)
        ts_raw = rows[:, ts_at]
        if ts_raw.max() >= 0x80:
            return None
    else:
        ts_raw = np.zeros((sections, count), U64)
        for j in range(max_width):
            longer = ts_width > j
            picked = rows[:, ts_at[longer] + j]
            last = ts_width[longer] == j + 1  # this byte ends its varint: no continuation bit
            if not np.array_equal(picked >= 0x80, np.broadcast_to(~last, picked.shape)):
                return None
            ts_raw[:, longer] |= (picked & 0x7F).astype(U64) << U64(7 * j)

    total = sections * count
    keys = [None] * total if template.keys_null else None
    values = [None] * total if template.values_null else None
    if template.cut is not None:
        unpack = template.cut
        cut: list = []
        for k in range(sections):
            cut += unpack(data, start + k * spacing)
        if keys is None and values is None:
            keys, values = cut[0::2], cut[1::2]
        elif keys is None:
            keys = cut
        else:
            values = cut
    offset_deltas = np.tile(template.offset_deltas, sections)
    return offset_deltas, unzigzag(ts_raw.ravel().astype(U64)), keys, values, [()] * total


def _framing_columns(layout, starts: np.ndarray, ts_width: np.ndarray, base: int) -> np.ndarray:
    """The framing bytes of a section, ascending, relative to ``base`` (its start): every byte
    of each record (``starts``: record starts plus the section end) except the timestamp delta,
    key and value."""
    record_at = starts - base
    ts_at = layout.ts_start - base
    key_at, value_at = layout.key_start - base, layout.value_start - base
    key_end = key_at + np.maximum(layout.key_len, 0)
    value_end = value_at + np.maximum(layout.value_len, 0)
    # per record: [start, ts) [ts end, key) [key end, value) [value end, next start)
    gap_at = np.stack([record_at[:-1], ts_at + ts_width, key_end, value_end], axis=1).ravel()
    gap_end = np.stack([ts_at, key_at, value_at, record_at[1:]], axis=1).ravel()
    gap_len = gap_end - gap_at
    total = int(gap_len.sum())
    return np.repeat(gap_at - (np.cumsum(gap_len) - gap_len), gap_len) + np.arange(total)


@lru_cache(maxsize=64)
def _section_struct(at: bytes, length: bytes) -> struct.Struct:
    """A struct that cuts ``length[i]`` bytes at ``at[i]`` (int64 arrays as bytes, ascending,
    not overlapping) from a section's start, as a tuple of bytes."""
    positions = np.frombuffer(at, np.int64).tolist()
    lengths = np.frombuffer(length, np.int64).tolist()
    parts = []
    previous_end = 0
    for position, n in zip(positions, lengths, strict=True):
        parts.append(f"{position - previous_end}x{n}s")
        previous_end = position + n
    return struct.Struct("<" + "".join(parts))
