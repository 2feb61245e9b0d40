"""Kafka's record batch, format v2 (magic 2): the unit of compression, CRC and storage.

This module is the spec. It turns records into batch bytes and back; it never opens a file
(bytes in, bytes out). Source: Kafka ``clients/.../common/record/DefaultRecordBatch.java`` and
``DefaultRecord.java``.

Batch header (61 bytes, every integer big-endian)::

    off  size  field                 notes
      0     8  base_offset           int64: offset of the first record of the *original* batch
      8     4  batch_length          int32: bytes after this field; the batch is 12 + batch_length
     12     4  partition_leader_epoch int32: -1 unknown; stamped by the broker on append
     16     1  magic                 int8: 2
     17     4  crc                   uint32: CRC-32C (Castagnoli) of bytes 21 .. end of batch
     21     2  attributes            int16: bit flags, below
     23     4  last_offset_delta     int32: last offset - base_offset
     27     8  base_timestamp        int64: first record's timestamp (the delete horizon if bit 6)
     35     8  max_timestamp         int64: largest record timestamp (append time for LogAppendTime)
     43     8  producer_id           int64: -1 = none
     51     2  producer_epoch        int16: -1 = none
     53     4  base_sequence         int32: -1 = none
     57     4  records_count         int32: number of records; in the clear even when compressed
     61     -  records               the records, or one compressed stream of them

*CRC coverage and why.* The CRC covers bytes 21 (attributes) to the end of the batch and nothing
before: base_offset and partition_leader_epoch are rewritten in place by whoever appends the batch
(offset assignment, leader epoch) and must not force a CRC recomputation, which for a compressed
batch would mean a re-encode; batch_length and magic are checked on their own; magic sits before
the CRC so a reader can learn the format (v0/v1 use CRC-32 at offset 12) before trusting the rest.

*Attributes* (only the low byte is used)::

    bits 0-2  codec: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd (5-7 invalid)
    bit  3    timestamp type: 0 CreateTime, 1 LogAppendTime (records take max_timestamp)
    bit  4    transactional
    bit  5    control batch (transaction markers, records are control records)
    bit  6    delete horizon set: base_timestamp is the time after which the cleaner may drop
              tombstones and markers (KIP-534); record timestamps are still base + delta

*Record* (inside the batch, after decompression; varints are zigzag, 7 bits per byte, least
significant group first, high bit = more; "varint" at most 5 bytes, "varlong" at most 10)::

    length            varint   bytes after this field
    attributes        int8     unused, written 0
    timestamp_delta   varlong  timestamp - base_timestamp
    offset_delta      varint   offset - base_offset
    key_length        varint   -1 = null key
    key               bytes
    value_length      varint   -1 = null value (a tombstone)
    value             bytes
    header_count      varint
    headers           per header: key_length varint, key (UTF-8, never null),
                                  value_length varint (-1 = null), value

A reader checks that every record's fields end exactly at its length, and that exactly
records_count records fill the batch (Kafka's ``RecordIterator`` does the same). The writer
uses the minimal (canonical) varint encoding, as Kafka does; the reader accepts any encoding
within the 5/10 byte limits.

*Compression*: with a codec set, bytes 61..end are one stream in the codec's framing (see
:mod:`logstore.compression`) whose content is the concatenated records.

Speed. ``encode`` and ``decode_columns`` are the hot paths and avoid per-record Python work:
varints are computed for all records at once with numpy. Records whose layout is identical
(same field widths and key/value lengths -- the usual case: a run of equal-sized values breaks
only where offset_delta grows a byte, at 64 and 8192) are written as rows of a 2-D byte array;
other inputs are assembled with one ``b"".join`` of precomputed prefixes and the values. The
decoder finds record starts run by run the same way, reads every field of every record with
vectorised gathers, and cuts runs of equally spaced values out with one ``struct`` call. Small
batches (where the fixed cost of numpy calls would dominate), headers and the rare long varints
go through plain Python; that record-by-record code is also the reference the tests hold the
fast paths to, byte for byte and error for error.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator, Sequence
from functools import lru_cache, partial
from typing import NamedTuple

import crc32c as _crc32c
import numpy as np

from .compression import Compression, compress, decompress
from .errors import CorruptBatchError

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "LOG_OVERHEAD",
    "MAGIC",
    "CRC_START",
    "MIN_BATCH_LENGTH",
    "MAGIC_OFFSET",
    "CRC_OFFSET",
    "CODEC_MASK",
    "LOG_APPEND_TIME_FLAG",
    "TRANSACTIONAL_FLAG",
    "CONTROL_FLAG",
    "DELETE_HORIZON_FLAG",
    "Compression",
    "BatchHeader",
    "Record",
    "RecordColumns",
    "unpack_header",
    "validate",
    "set_base_offset",
    "encode",
    "decode",
    "decode_columns",
    "iter_batches",
]

HEADER = struct.Struct(
    ">"
    "q"  # base_offset: offset of the first record
    "i"  # batch_length: bytes after this field
    "i"  # partition_leader_epoch
    "b"  # magic: 2
    "I"  # crc: CRC-32C of attributes .. end of batch (unsigned)
    "h"  # attributes: codec | timestamp type | transactional | control | delete horizon
    "i"  # last_offset_delta
    "q"  # base_timestamp (or delete horizon when attributes bit 6 is set)
    "q"  # max_timestamp
    "q"  # producer_id
    "h"  # producer_epoch
    "i"  # base_sequence
    "i"  # records_count
)
HEADER_SIZE = HEADER.size  # 61
LOG_OVERHEAD = struct.calcsize(">qi")  # 12: base_offset + batch_length, common to every magic
MAGIC = 2
MAGIC_OFFSET = struct.calcsize(">qii")  # 16
CRC_OFFSET = MAGIC_OFFSET + 1  # 17
CRC_START = CRC_OFFSET + 4  # 21: the attributes, first byte the CRC covers
MIN_BATCH_LENGTH = HEADER_SIZE - LOG_OVERHEAD  # 49: an empty batch

CODEC_MASK = 0x07
LOG_APPEND_TIME_FLAG = 0x08
TRANSACTIONAL_FLAG = 0x10
CONTROL_FLAG = 0x20
DELETE_HORIZON_FLAG = 0x40

_BATCH_LENGTH = struct.Struct(">i")
_BASE_OFFSET = struct.Struct(">q")
_CRC = struct.Struct(">I")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MAX_BATCH_LENGTH = 2**31 - 1
# The smallest record: length, attributes, timestamp delta, offset delta, key length, value length
# and header count, one byte each. Bounds records_count before anything is allocated.
_MIN_RECORD_SIZE = 7

crc32c = _crc32c.crc32c


class BatchHeader(NamedTuple):
    """The 61-byte batch header, fields in wire order."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def size(self) -> int:
        """Bytes of the whole batch, header included."""
        return LOG_OVERHEAD + self.batch_length

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> Compression:
        """The codec; raises CorruptBatchError for the invalid ids 5..7."""
        codec = self.attributes & CODEC_MASK
        try:
            return Compression(codec)
        except ValueError:
            raise CorruptBatchError(f"unknown compression codec id {codec}") from None

    @property
    def timestamp_type(self) -> str:
        return "LogAppendTime" if self.attributes & LOG_APPEND_TIME_FLAG else "CreateTime"

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_FLAG)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_FLAG)

    @property
    def delete_horizon_ms(self) -> int | None:
        """The cleaner's delete horizon (base_timestamp) when attribute bit 6 is set, else None."""
        return self.base_timestamp if self.attributes & DELETE_HORIZON_FLAG else None


class Record(NamedTuple):
    """One record as read back: absolute offset, timestamp in ms, key, value, headers."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


class RecordColumns(NamedTuple):
    """A batch's records column by column (``decode_columns``): index i of each is record i."""

    offsets: np.ndarray  # int64
    timestamps_ms: np.ndarray  # int64
    keys: list
    values: list
    headers: list  # tuples of (str, bytes | None); () when a record has none


# --- header -------------------------------------------------------------------------------------


def unpack_header(buf, position: int = 0, *, path: str | None = None) -> BatchHeader:
    """Read the header at ``position`` without checking the CRC.

    Raises CorruptBatchError if fewer than 61 bytes are there, magic is not 2, or batch_length is
    below 49 (the size of an empty batch after the 12-byte prefix).
    """
    if position < 0 or len(buf) - position < HEADER_SIZE:
        raise CorruptBatchError(
            f"batch header needs {HEADER_SIZE} bytes, {max(len(buf) - position, 0)} left",
            path=path,
            position=position,
        )
    header = BatchHeader._make(HEADER.unpack_from(buf, position))
    if header.magic != MAGIC:
        raise CorruptBatchError(f"magic {header.magic}, expected {MAGIC}", path=path, position=position)
    if header.batch_length < MIN_BATCH_LENGTH:
        raise CorruptBatchError(
            f"batch_length {header.batch_length} is below the minimum {MIN_BATCH_LENGTH}",
            path=path,
            position=position,
        )
    return header


def validate(buf, position: int = 0, *, path: str | None = None) -> BatchHeader:
    """Shallow check of the batch at ``position``: header, magic, whole batch present, CRC.

    Records are neither decompressed nor decoded, so this costs one CRC-32C pass over the batch.
    """
    header = unpack_header(buf, position, path=path)
    end = position + LOG_OVERHEAD + header.batch_length
    if end > len(buf):
        raise CorruptBatchError(
            f"batch of {header.size} bytes runs {end - len(buf)} bytes past the end of the buffer",
            path=path,
            position=position,
        )
    actual = crc32c(memoryview(buf)[position + CRC_START : end])
    if actual != header.crc:
        raise CorruptBatchError(
            f"CRC-32C mismatch: stored {header.crc:#010x}, computed {actual:#010x}",
            path=path,
            position=position,
        )
    return header


def set_base_offset(buf, base_offset: int, position: int = 0) -> None:
    """Rewrite the base offset in place (bytes 0..8, outside the CRC: the CRC stays valid)."""
    if not _INT64_MIN <= base_offset <= _INT64_MAX:
        raise ValueError(f"base_offset {base_offset} does not fit in int64")
    _BASE_OFFSET.pack_into(buf, position, base_offset)


def iter_batches(buf, position: int = 0, *, path: str | None = None) -> Iterator[tuple[int, BatchHeader]]:
    """Yield ``(position, header)`` of each validated batch in ``buf``, from ``position`` on.

    Stops silently at a torn tail: fewer than 61 bytes left, or a batch running past the end
    (a write that did not finish). Anything else that is wrong -- batch_length below 49, bad
    magic, bad CRC -- raises CorruptBatchError. The length is checked before the end, as Kafka's
    ``FileLogInputStream`` does, so an impossible length is damage, not a torn write.
    """
    size = len(buf)
    while size - position >= HEADER_SIZE:
        (batch_length,) = _BATCH_LENGTH.unpack_from(buf, position + 8)
        if batch_length < MIN_BATCH_LENGTH:
            raise CorruptBatchError(
                f"batch_length {batch_length} is below the minimum {MIN_BATCH_LENGTH}",
                path=path,
                position=position,
            )
        if position + LOG_OVERHEAD + batch_length > size:
            return
        header = validate(buf, position, path=path)
        yield position, header
        position += LOG_OVERHEAD + batch_length


# --- varints (scalar) ---------------------------------------------------------------------------


def _zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


def _varint_bytes(value: int) -> bytes:
    """Canonical zigzag varint of ``value`` (int32 or int64 range)."""
    z = (value << 1) ^ (value >> 63)
    if z < 0x80:
        return _SMALL_VARINTS[z]
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_SMALL_VARINTS = [bytes((z,)) for z in range(0x80)]


def _varint_width(z: int) -> int:
    """Bytes in the canonical varint of the (already zigzagged) non-negative ``z``."""
    return max(1, (z.bit_length() + 6) // 7)


def _read_varint(data: bytes, pos: int, end: int, max_bytes: int) -> tuple[int, int]:
    """Decode one zigzag varint at ``pos``; returns (value, next position). ValueError if bad.

    ``max_bytes`` is 5 for a varint (int32) and 10 for a varlong (int64).
    """
    raw = 0
    shift = 0
    for _ in range(max_bytes):
        if pos >= end:
            raise ValueError("varint runs past the end of its record")
        b = data[pos]
        pos += 1
        raw |= (b & 0x7F) << shift
        if b < 0x80:
            if raw >> (32 if max_bytes == 5 else 64):
                raise ValueError("varint overflows its type")
            return (raw >> 1) ^ -(raw & 1), pos
        shift += 7
    raise ValueError(f"varint longer than {max_bytes} bytes")


# --- varints (vectorised) -----------------------------------------------------------------------

_U64 = np.uint64
_WIDTH_LIMITS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=_U64)  # 2**7 .. 2**63


def _zigzag_array(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.int64, copy=False)
    return ((values << 1) ^ (values >> 63)).view(_U64)


def _widths(z: np.ndarray) -> np.ndarray:
    """Canonical varint widths (1..10) of the zigzagged values ``z`` (uint64)."""
    return np.searchsorted(_WIDTH_LIMITS, z, side="right") + 1


def _varint_columns(z: np.ndarray, width: int) -> list[np.ndarray]:
    """The ``width`` bytes of each value's varint, one uint8 array per byte position."""
    cols = []
    for j in range(width):
        col = (z >> _U64(7 * j)) & _U64(0x7F)
        if j < width - 1:
            col |= _U64(0x80)
        cols.append(col.astype(np.uint8))
    return cols


def _scatter_varints(out: np.ndarray, pos: np.ndarray, z, width) -> None:
    """Write varints of ``z`` (array or int) with ``width`` (array or int) at ``out[pos]``."""
    if isinstance(z, int):
        z = np.full(len(pos), z, dtype=_U64)
    if isinstance(width, int):
        for j, col in enumerate(_varint_columns(z, width)):
            out[pos + j] = col
        return
    max_width = int(width.max())
    for j in range(max_width):
        byte = ((z >> _U64(7 * j)) & _U64(0x7F)).astype(np.uint8)
        byte |= (width > j + 1).astype(np.uint8) << 7
        if j == 0:
            out[pos] = byte
        else:
            sel = width > j
            out[pos[sel] + j] = byte[sel]


# --- encode -------------------------------------------------------------------------------------


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
    parts = [_varint_bytes(len(record_headers))]
    for pair in record_headers:
        try:
            key, value = pair
        except (TypeError, ValueError):
            raise TypeError(f"headers[{i}] must hold (str, bytes | None) pairs, got {pair!r}") from None
        if not isinstance(key, str):
            raise TypeError(f"headers[{i}] key must be str, not {type(key).__name__}")
        # surrogateescape: header keys that were not valid UTF-8 when read come back byte-exact.
        key_bytes = key.encode("utf-8", "surrogateescape")
        parts.append(_varint_bytes(len(key_bytes)))
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
            parts.append(_varint_bytes(len(value)))
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
        if not _INT64_MIN <= ts <= _INT64_MAX:
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
            if not _INT64_MIN <= ts <= _INT64_MAX:
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
    if array.dtype == np.uint64 and (array > _INT64_MAX).any():
        raise ValueError("a timestamp does not fit in int64")
    array = array.astype(np.int64, copy=False)
    base = int(array[0])
    with np.errstate(over="ignore"):
        deltas = array - array[0]
    if not deltas.any():
        return base, base, 0
    return base, int(array.max()), deltas.tolist() if small else deltas


def encode(
    values: Sequence,
    *,
    keys: Sequence | None = None,
    headers: Sequence | None = None,
    timestamps_ms=None,
    base_offset: int = 0,
    compression: Compression | int | str = Compression.NONE,
    compression_level: int | None = None,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    is_transactional: bool = False,
    log_append_time: bool = False,
    partition_leader_epoch: int = -1,
) -> bytes:
    """Build one batch holding ``values`` at offsets ``base_offset .. base_offset + n - 1``.

    ``values`` and ``keys`` hold bytes-like objects or None (a null value is a tombstone).
    ``headers``: per record a sequence of ``(str, bytes | None)``. ``timestamps_ms``: None (now,
    for all), one int (for all) or one int per record. With ``log_append_time`` the batch is
    marked LogAppendTime and readers give every record ``max_timestamp``.

    Raises ValueError for an empty ``values``, mismatched lengths or out-of-range numbers, and
    TypeError for anything that is not bytes-like / str / int where those are required.
    """
    if not isinstance(values, list | tuple):
        if isinstance(values, str | bytes | bytearray | memoryview):
            raise TypeError("values must be a sequence of bytes-like objects, not one bytes-like object")
        values = list(values)
    n = len(values)
    if n == 0:
        raise ValueError("a batch needs at least one record")
    if n > 2**31 - 1:
        raise ValueError(f"{n} records do not fit in one batch")
    if isinstance(compression, str):
        compression = Compression.from_name(compression)
    compression = Compression(compression)

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
        value_col = _byte_column(values, n, "values")
        key_col = None if keys is None else _byte_column(keys, n, "keys")
        buffer, start = _encode_records(n, value_col, key_col, header_blocks, ts_deltas)

    attributes = int(compression)
    if log_append_time:
        attributes |= LOG_APPEND_TIME_FLAG
    if is_transactional:
        attributes |= TRANSACTIONAL_FLAG
    if compression is not Compression.NONE:
        buffer, start = compress(compression, memoryview(buffer)[start:], compression_level), 0
    elif compression_level is not None:
        raise ValueError("compression_level needs a compression codec")
    batch_length = HEADER_SIZE - LOG_OVERHEAD + len(buffer) - start
    if batch_length > _MAX_BATCH_LENGTH:
        raise ValueError(f"batch of {batch_length} bytes exceeds the int32 batch_length")
    fields = (
        base_offset,
        batch_length,
        partition_leader_epoch,
        MAGIC,
        0,  # crc, filled in below
        attributes,
        n - 1,
        base_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        n,
    )
    try:
        if start == HEADER_SIZE:  # room was left for the header: write it in place, one copy less
            HEADER.pack_into(buffer, 0, *fields)
            _CRC.pack_into(buffer, CRC_OFFSET, crc32c(memoryview(buffer)[CRC_START:]))
            return buffer.tobytes()
        header = HEADER.pack(*fields)
    except struct.error as error:
        raise ValueError(f"a header field is out of range: {error}") from None
    crc = crc32c(buffer, crc32c(memoryview(header)[CRC_START:]))
    return b"".join((header[:CRC_OFFSET], _CRC.pack(crc), header[CRC_START:], buffer))


# Up to this many records, plain Python per record (about 1 us each) beats the fixed cost of the
# numpy calls (20 us for the run path, 70 us for the join path, 60 us to decode). Encoding checks
# for runs above _SMALL_BATCH and still goes to Python below _SMALL_JOINED when there are none.
_SMALL_BATCH = 24
_SMALL_JOINED = 64
_SMALL_DECODE = 64


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
                _varint_bytes(ts_deltas if isinstance(ts_deltas, int) else ts_deltas[i]),
                _varint_bytes(i),
                _varint_bytes(-1 if key_items is None else key_lengths[i]),
            )
        )
        key = _EMPTY if key_items is None else key_items[i]
        value_head = _varint_bytes(value_lengths[i])
        tail = b"\x00" if header_blocks is None else header_blocks[i]
        body = len(head) + len(key) + len(value_head) + len(value_items[i]) + len(tail)
        parts += (_varint_bytes(body), head, key, value_head, value_items[i], tail)
    return b"".join(parts)


# The run path costs about 15 us a run (a dozen numpy calls), the join path about 70 us plus
# 0.2 us a record: runs win while there are at most 3 + n / 128 of them.
_RUNS_PER_RECORD = 1 / 128


def _encode_records(n: int, values: _Column, keys: _Column | None, header_blocks, ts_deltas):
    """The concatenated, uncompressed records: ``(buffer, start)`` with the records at
    ``buffer[start:]``; ``start`` is HEADER_SIZE when room was left for the header."""
    z_off = np.arange(0, 2 * n, 2, dtype=_U64)  # zigzag(i) = 2i for i >= 0
    w_off = _widths(z_off)
    if isinstance(ts_deltas, int):
        z_ts, w_ts = 0, 1
    else:
        z_ts = _zigzag_array(ts_deltas)
        w_ts = _widths(z_ts)
    key_lengths = -1 if keys is None else keys.lengths

    if header_blocks is None:
        # Runs of records with identical layout: break wherever a width or length changes.
        change = np.diff(w_off) != 0
        for column in (w_ts, key_lengths, values.lengths):
            if not isinstance(column, int):
                change |= np.diff(column) != 0
        breaks = np.flatnonzero(change) + 1
        if len(breaks) + 1 <= 3 + n * _RUNS_PER_RECORD:
            return _encode_runs(n, values, keys, z_off, z_ts, breaks), HEADER_SIZE
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


def _encode_runs(n, values: _Column, keys: _Column | None, z_off, z_ts, breaks) -> np.ndarray:
    """Write each run of identically laid-out records as the rows of a 2-D uint8 array.

    A row is [length][attributes][timestamp delta][offset delta][key length][key][value length]
    [value][header count]. Within a run only the two deltas, the key and the value differ from
    row to row; everything else is one template row broadcast down the run. The first HEADER_SIZE
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
        w_ts = _varint_width(int(z_ts[a])) if ts_varies else 1
        w_off = _varint_width(int(z_off[a]))
        key_len = -1 if keys is None else _column_at(keys.lengths, a)
        value_len = _column_at(values.lengths, a)
        key_head = _varint_bytes(key_len)
        value_head = _varint_bytes(value_len)
        # attributes, both deltas (placeholders: rewritten per row, or 0 when constant), key length
        deltas = bytes(1 + w_ts + w_off)
        body_len = len(deltas) + len(key_head) + max(key_len, 0) + len(value_head) + max(value_len, 0) + 1
        length_head = _varint_bytes(body_len)
        head = length_head + deltas + key_head
        ts_col = len(length_head) + 1
        row_len = len(length_head) + body_len
        layout = (HEADER_SIZE + total, row_len, head, ts_col, w_ts, w_off, key_len, value_head, value_len)
        layouts.append((a, b, layout))
        total += (b - a) * row_len

    out = np.empty(HEADER_SIZE + total, dtype=np.uint8)
    for a, b, (start, row_len, head, ts_col, w_ts, w_off, key_len, value_head, value_len) in layouts:
        m = b - a
        rows = out[start : start + m * row_len].reshape(m, row_len)
        col = len(head)
        rows[:, :col] = np.frombuffer(head, dtype=np.uint8)
        if ts_varies:
            for j, byte in enumerate(_varint_columns(z_ts[a:b], w_ts)):
                rows[:, ts_col + j] = byte
        off_col = ts_col + w_ts
        for j, byte in enumerate(_varint_columns(z_off[a:b], w_off)):
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
    z_key = _zigzag_array(key_lengths)
    w_key = _widths(z_key)
    z_value = _zigzag_array(value_lengths)
    w_value = _widths(z_value)
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
    z_body = _zigzag_array(body)
    w_body = _widths(z_body)

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
    _scatter_varints(buf, pos, z_body, w_body)
    pos = pos + w_body + 1  # attributes byte stays 0
    if not isinstance(z_ts, int):
        _scatter_varints(buf, pos, z_ts, w_ts)
    pos = pos + w_ts
    _scatter_varints(buf, pos, z_off, w_off)
    pos = pos + w_off
    _scatter_varints(buf, pos, z_key, w_key)
    pos = pos + w_key
    _scatter_varints(buf, pos, z_value, w_value)

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


# --- decode -------------------------------------------------------------------------------------


def decode(buf, position: int = 0, *, path: str | None = None, verify_crc: bool = True) -> list[Record]:
    """Decode every record of the batch at ``position`` (decompressing it if needed).

    Raises CorruptBatchError for a bad header or CRC (unless ``verify_crc`` is False), a stream
    that does not decompress, a record whose fields do not end at its length, or a record count
    that does not fill the batch exactly.
    """
    columns = decode_columns(buf, position, path=path, verify_crc=verify_crc)
    return list(
        map(
            _new_record,
            zip(
                columns.offsets.tolist(),
                columns.timestamps_ms.tolist(),
                columns.keys,
                columns.values,
                columns.headers,
                strict=True,
            ),
        )
    )


_new_record = partial(tuple.__new__, Record)


def decode_columns(
    buf, position: int = 0, *, path: str | None = None, verify_crc: bool = True
) -> RecordColumns:
    """Like :func:`decode`, but column by column: int64 arrays of offsets and timestamps, lists of
    keys, values and headers. The fast path for bulk reads."""
    if verify_crc:
        header = validate(buf, position, path=path)
    else:
        header = unpack_header(buf, position, path=path)
        if position + header.size > len(buf):
            raise CorruptBatchError(
                f"batch of {header.size} bytes runs past the end of the buffer", path=path, position=position
            )
    count = header.records_count
    codec = header.attributes & CODEC_MASK
    end = position + header.size
    if codec == 0:
        if type(buf) is bytes:
            data, start = buf, position + HEADER_SIZE
        else:
            data = bytes(memoryview(buf)[position + HEADER_SIZE : end])
            start, end = 0, len(data)
    else:
        data = decompress(codec, memoryview(buf)[position + HEADER_SIZE : end], path=path, position=position)
        start, end = 0, len(data)
    try:
        off_delta, ts_delta, keys, values, headers = _decode_records(data, start, end, count)
    except _RecordError as error:
        raise CorruptBatchError(str(error), path=path, position=position) from None
    except (ValueError, IndexError, UnicodeDecodeError, OverflowError) as error:  # safety net
        raise CorruptBatchError(f"malformed records: {error}", path=path, position=position) from error
    offsets = off_delta + np.int64(header.base_offset)
    if header.attributes & LOG_APPEND_TIME_FLAG:
        timestamps = np.full(count, header.max_timestamp, dtype=np.int64)
    else:
        with np.errstate(over="ignore"):
            timestamps = ts_delta + np.int64(header.base_timestamp)  # wraps like Java's long
    return RecordColumns(offsets, timestamps, keys, values, headers)


class _RecordError(Exception):
    """Internal: record framing is wrong (re-raised as CorruptBatchError with path/position)."""


def _decode_records(data: bytes, start: int, end: int, count: int):
    if count < 0:
        raise _RecordError(f"records_count {count} is negative")
    if count == 0:
        if start != end:
            raise _RecordError(f"{end - start} bytes of records in a batch that says it holds none")
        empty = np.zeros(0, np.int64)
        return empty, empty, [], [], []
    if count * _MIN_RECORD_SIZE > end - start:
        raise _RecordError(f"records_count {count} cannot fit in {end - start} bytes of records")
    if count <= _SMALL_DECODE:
        return _decode_small(data, start, end, count)
    array = np.frombuffer(data, dtype=np.uint8)
    starts, length_widths = _record_starts(data, start, end, count)
    record_end = starts[1:]
    pos = starts[:count] + length_widths + 1  # skip the length and the attributes byte
    _check_inside(pos, record_end, "attributes")
    ts_raw, width = _gather_varints(array, pos, record_end, 10, "timestamp delta")
    pos = pos + width
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
    pos = pos + width
    headers = [()] * count
    if hc_raw.any():
        header_counts = _unzigzag(hc_raw)
        if (header_counts < 0).any():
            raise _RecordError(f"record {_first(header_counts < 0)}: negative header count")
        ends = record_end.tolist()
        for i in np.flatnonzero(header_counts).tolist():
            headers[i], pos[i] = _read_headers(data, int(pos[i]), ends[i], int(header_counts[i]), i)
    if not (pos == record_end).all():
        bad = _first(pos != record_end)
        raise _RecordError(
            f"record {bad}: fields end at byte {int(pos[bad]) - start} but its length says {int(record_end[bad]) - start}"
        )
    keys = _cut(data, key_start, key_len, count)
    values = _cut(data, value_start, value_len, count)
    return _unzigzag(off_raw), _unzigzag(ts_raw), keys, values, headers


def _decode_small(data: bytes, start: int, end: int, count: int):
    """Records one by one in Python: for small batches, and the reference for the fast path.

    One-byte varints (nearly every field of a small record) are decoded inline; anything longer
    goes through ``_read_varint``. Reading past ``record_end`` raises, so bounds hold throughout.
    """
    offset_deltas, timestamp_deltas, keys, values, headers = [], [], [], [], []
    pos = start
    read = _read_varint
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
        raise _RecordError(f"record {i}: {error}") from None
    if pos != end:
        raise _RecordError(f"{end - pos} bytes left after the last of {count} records")
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
        raise _RecordError(f"record {_first(pos >= record_end)}: {field} lies past the end of the record")


def _unzigzag(raw: np.ndarray) -> np.ndarray:
    return (raw >> _U64(1)).view(np.int64) ^ -((raw & _U64(1)).view(np.int64))


def _gather_varints(array: np.ndarray, pos: np.ndarray, limit: np.ndarray, max_bytes: int, field: str):
    """Decode one varint at each ``pos`` (all already checked < ``limit``).

    Returns (raw zigzag values as uint64, widths as an int64 array or the int 1). A round per
    byte position, over all records at once; one-byte fields cost one gather.
    """
    byte = array[pos]
    if byte.max() < 0x80:
        return byte.astype(_U64), 1
    raw = (byte & 0x7F).astype(_U64)
    more = byte >> 7  # 1 where the varint continues
    width = more.astype(np.int64) + 1
    last = len(array) - 1
    for j in range(1, max_bytes):
        at = pos + j
        if np.count_nonzero((at >= limit) & more.view(bool)):
            bad = _first((at >= limit) & more.view(bool))
            raise _RecordError(f"record {bad}: {field} runs past the end of the record")
        # Finished varints read some byte and multiply it away; clamp so nothing reads past the end.
        byte = array[np.minimum(at, last)] * more
        if j == 9 and byte.max() > 1:
            raise _RecordError(f"record {_first(byte > 1)}: {field} overflows 64 bits")
        raw |= (byte & 0x7F).astype(_U64) << _U64(7 * j)
        more = byte >> 7
        if not more.any():
            break
        width += more
    else:
        raise _RecordError(f"record {_first(more.view(bool))}: {field} is longer than {max_bytes} bytes")
    if max_bytes == 5 and raw.max() >> _U64(32):
        raise _RecordError(f"record {_first((raw >> _U64(32)) != 0)}: {field} overflows 32 bits")
    return raw, width


def _lengths(raw: np.ndarray, field: str) -> np.ndarray:
    """Zigzag-decode lengths that may be -1 (null) but not below; int64."""
    if raw.min() == 1 == raw.max():  # all null
        return np.full(len(raw), -1, np.int64)
    lengths = (raw >> _U64(1)).astype(np.int64)
    odd = (raw & _U64(1)).astype(bool)
    if odd.any():
        if np.count_nonzero(raw[odd] != 1):
            raise _RecordError(f"record {_first(odd & (raw != 1))}: negative {field}")
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
                    length, after = _read_varint(data, pos, end, 5)
                except ValueError as error:
                    raise _RecordError(f"record {i}: length {error}") from None
                width, raw = after - pos, _zigzag(length)
        if raw & 1:
            raise _RecordError(f"record {i}: negative length {-(raw >> 1) - 1}")
        row = width + (raw >> 1)
        if row != previous_row:
            streak = 0
        elif streak < 1:
            streak = 1
        elif row >= 8:  # (the probe below reads up to 8 bytes of each row)
            # the third record of this size in a row: probe for a run
            if pos + row > end:
                raise _RecordError(f"record {i}: length {raw >> 1} runs past the end of the batch")
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
            raise _RecordError(f"the records run past the end of the batch (record {i} of {count})")
        raise _RecordError(f"{end - pos} bytes left after the last of {count} records")
    starts[count] = end
    return starts, widths


def _read_headers(data: bytes, pos: int, end: int, header_count: int, i: int):
    if header_count > (end - pos) // 2:  # each header takes at least two bytes
        raise _RecordError(f"record {i}: {header_count} headers cannot fit in the record")
    result = []
    try:
        for _ in range(header_count):
            key_len, pos = _read_varint(data, pos, end, 5)
            if key_len < 0 or pos + key_len > end:
                raise _RecordError(f"record {i}: header key length {key_len} does not fit")
            key = data[pos : pos + key_len].decode("utf-8", "surrogateescape")
            pos += key_len
            value_len, pos = _read_varint(data, pos, end, 5)
            if value_len < -1 or pos + value_len > end:
                raise _RecordError(f"record {i}: header value length {value_len} does not fit")
            if value_len == -1:
                value = None
            else:
                value = data[pos : pos + value_len]
                pos += value_len
            result.append((key, value))
    except ValueError as error:
        raise _RecordError(f"record {i}: header {error}") from None
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
