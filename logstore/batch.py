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

This module does the batch: header, CRC, compression, argument checks. The records inside it are
written by :mod:`logstore._record_encode` and read by :mod:`logstore._record_decode`, both on the
varints of :mod:`logstore._varint`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from functools import partial
from typing import NamedTuple

import crc32c as _crc32c
import numpy as np

from ._record_decode import RecordError, decode_records
from ._record_encode import encode_records
from ._varint import INT64_MAX, INT64_MIN, read_varint
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
_MAX_BATCH_LENGTH = 2**31 - 1

crc32c = _crc32c.crc32c


def _whole_crc32c():
    """The fastest one-shot CRC-32C at hand: checking a whole batch in one call (validate,
    recovery, the read path). ``crc32c`` stays the incremental one (encoders chain calls).

    ``fastcrc`` (a dependency; optional at run time) folds with carry-less multiplies (PCLMULQDQ / VPCLMULQDQ on x86,
    PMULL on ARM): about 10 µs per MiB against about 38 µs for ``crc32c`` (the SSE4.2 ``crc32``
    instruction) on the benchmark machine. It is used only after it agrees with ``crc32c`` on a
    known vector, so a broken build falls back instead of refusing every batch.
    """
    try:
        from fastcrc.crc32 import iscsi
    except ImportError:
        return crc32c
    try:
        probe = bytes(range(256)) * 5
        if iscsi(probe) == crc32c(probe) and iscsi(memoryview(probe)[3:]) == crc32c(probe[3:]):
            return iscsi
    except Exception:  # pragma: no cover - a broken optional build: keep the reference
        pass
    return crc32c  # pragma: no cover


crc32c_oneshot = _whole_crc32c()


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
    actual = crc32c_oneshot(memoryview(buf)[position + CRC_START : end])
    if actual != header.crc:
        raise CorruptBatchError(
            f"CRC-32C mismatch: stored {header.crc:#010x}, computed {actual:#010x}",
            path=path,
            position=position,
        )
    return header


def set_base_offset(buf, base_offset: int, position: int = 0) -> None:
    """Rewrite the base offset in place (bytes 0..8, outside the CRC: the CRC stays valid)."""
    if not INT64_MIN <= base_offset <= INT64_MAX:
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


# --- encode -------------------------------------------------------------------------------------


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

    buffer, start, base_timestamp, max_timestamp = encode_records(
        values, keys, headers, timestamps_ms, reserve=HEADER_SIZE
    )

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
    header, off_delta, ts_delta, keys, values, headers = _decode_section(buf, position, path, verify_crc, True)
    offsets, timestamps = _absolute(header, off_delta, ts_delta)
    return RecordColumns(offsets, timestamps, keys, values, headers)


def decode_offsets_and_timestamps(buf, position: int = 0, *, path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The offsets and timestamps (int64 arrays) of the batch's records, checked as
    :func:`decode_columns` checks them (CRC, codec, record framing), without making the keys and
    values: for finding a record by timestamp."""
    header, off_delta, ts_delta, _keys, _values, _headers = _decode_section(buf, position, path, True, False)
    return _absolute(header, off_delta, ts_delta)


def first_record_time(buf, position: int = 0, *, path: str | None = None) -> tuple[int, int] | None:
    """``(offset, timestamp)`` of the first record of the batch at ``position``, CRC checked,
    without decoding the others (a time lookup whose target is at or before the first record of
    the batch it lands in needs no more). None where that takes decompressing or the batch is
    empty, or the first record's prefix does not parse: decode the batch instead
    (:func:`decode_offsets_and_timestamps` then reports any damage precisely)."""
    header = validate(buf, position, path=path)
    if header.attributes & CODEC_MASK or header.records_count <= 0:
        return None
    end = position + header.size
    try:
        _length, at = read_varint(buf, position + HEADER_SIZE, end, 5)
        at += 1  # (record attributes)
        ts_delta, at = read_varint(buf, at, end, 10)
        offset_delta, at = read_varint(buf, at, end, 5)
    except ValueError:
        return None
    if header.attributes & LOG_APPEND_TIME_FLAG:
        timestamp = header.max_timestamp
    else:
        timestamp = (header.base_timestamp + ts_delta + 2**63) % 2**64 - 2**63  # wraps like Java's long
    return header.base_offset + offset_delta, timestamp


def _decode_section(buf, position: int, path: str | None, verify_crc: bool, payloads: bool):
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
        return header, *decode_records(data, start, end, count, payloads=payloads)
    except RecordError as error:
        raise CorruptBatchError(str(error), path=path, position=position) from None
    except (ValueError, IndexError, UnicodeDecodeError, OverflowError) as error:  # safety net
        raise CorruptBatchError(f"malformed records: {error}", path=path, position=position) from error


def _absolute(header: BatchHeader, off_delta: np.ndarray, ts_delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Absolute offsets and timestamps from the deltas (LogAppendTime: the batch's max timestamp)."""
    offsets = off_delta + np.int64(header.base_offset)
    if header.attributes & LOG_APPEND_TIME_FLAG:
        timestamps = np.full(len(offsets), header.max_timestamp, dtype=np.int64)
    else:
        with np.errstate(over="ignore"):
            timestamps = ts_delta + np.int64(header.base_timestamp)  # wraps like Java's long
    return offsets, timestamps
