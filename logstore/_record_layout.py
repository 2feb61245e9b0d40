"""Where batches and records lie in a sealed segment's bytes: the cleaner's reading side.

:class:`SegmentReader` reads a segment window by window and validates every batch (size, magic,
CRC); :func:`locate` walks the records sections of a window's batches and locates every record's
fields with one vectorised pass per field. Kept apart from :mod:`logstore.cleaner` because it is
the byte layout of :mod:`logstore.batch`'s docstring, not cleaning policy, and is tested against
the batch decoder on its own.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from . import batch as batch_format
from ._offset_map import HASH_PADDING
from ._varint import U64, unzigzag
from .batch import CODEC_MASK, HEADER_SIZE, LOG_OVERHEAD, BatchHeader
from .compression import decompress
from .errors import CorruptBatchError

__all__ = [
    "Malformed",
    "Records",
    "locate",
    "locate_found",
    "record_offsets",
    "records_section",
    "SegmentReader",
]

_MIN_BATCH_LENGTH = HEADER_SIZE - LOG_OVERHEAD


# --- where the records lie ----------------------------------------------------------------------
#
# The cleaner never builds a Python object per record. It joins the (uncompressed) records
# sections of the batches of one read window into one buffer, locates every record's fields in
# it -- the layout of logstore.batch's docstring -- with one vectorised pass per field for the
# whole window, hashes keys where they lie, and cuts kept records out as byte ranges. A record
# whose batch keeps its base offset and base timestamp is copied unchanged, headers and all.


class Malformed(Exception):
    """Records that do not parse; ``batch`` is the index of the batch (for path and position)."""

    def __init__(self, message: str, batch: int):
        super().__init__(message)
        self.batch = batch


class Records(NamedTuple):
    """Every record of some batches, located in ``buffer`` (their records sections, joined and
    padded for :func:`~logstore._offset_map.hash_keys`). Arrays have one int64 entry per record,
    positions index ``buffer``; batch ``j`` holds records ``first[j] .. first[j + 1]``."""

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


def locate(sections: list, headers: list[BatchHeader]) -> Records:
    """Locate the records of ``sections`` (the records of the batches ``headers``, uncompressed)."""
    buffer = b"".join([*sections, HASH_PADDING])
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
    return Records(buffer, first, record_starts, ends, attributes_at, rest_at, timestamp_deltas,
                    offset_deltas, key_starts, key_lengths, value_lengths)


class _Fields:
    """Vectorised field reads over the records of a :class:`Records`."""

    def __init__(self, data: np.ndarray, ends: np.ndarray, first: np.ndarray):
        self.data, self.ends, self.first = data, ends, first

    def check(self, bad: np.ndarray, message: str) -> None:
        if bad.any():
            record = int(np.argmax(bad))
            raise Malformed(message, int(np.searchsorted(self.first, record, side="right")) - 1)

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
        return unzigzag(raw), width


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
        raise Malformed(f"{count} records cannot fill {end} bytes", batch)
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
        raise Malformed(f"{count} records do not fit the section", batch) from None
    starts[filled : filled + len(stepped)] = stepped
    if pos != end:
        raise Malformed(f"the records end at byte {pos} of a {end}-byte section", batch)
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
    raise Malformed("a record length is longer than 5 bytes", batch)


# --- a window's batches -------------------------------------------------------------------------
#
# ``found`` lists the batches of one window whose records are looked at: ``(position in the
# window, header, records section)`` for each.


def records_section(segment, view, position: int, at: int, header: BatchHeader):
    """The records of a batch, uncompressed: a view into the window, or bytes."""
    section = view[at + HEADER_SIZE : at + header.size]
    codec = header.attributes & CODEC_MASK
    if codec:
        section = decompress(codec, section, path=segment.log_path, position=position + at)
    return section


def locate_found(segment, position: int, found: list) -> Records:
    """:func:`locate` for ``found``; a :class:`Malformed` becomes a :class:`CorruptBatchError`
    naming the segment and the batch's file position."""
    try:
        return locate([f[2] for f in found], [f[1] for f in found])
    except Malformed as error:
        raise CorruptBatchError(f"records do not parse: {error}", path=segment.log_path,
                                position=position + found[error.batch][0]) from None


def record_offsets(records: Records, found: list) -> np.ndarray:
    """The offset of every record of ``found``."""
    bases = np.array([f[1].base_offset for f in found], np.int64)
    return records.offset_deltas + np.repeat(bases, np.diff(records.first))


# --- reading segments ---------------------------------------------------------------------------


def _relocated(error: CorruptBatchError, path: str, base: int) -> CorruptBatchError:
    message = str(error)
    suffix = f" at position {error.position}"
    if error.position is not None and message.endswith(suffix):
        message = message[: -len(suffix)]
    return CorruptBatchError(message, path=path, position=base + (error.position or 0))


class SegmentReader:
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

