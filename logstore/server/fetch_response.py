"""The Fetch response, v4-v11, hand-encoded so record bytes can go out with ``os.sendfile``.

Why by hand: a schema codec needs the records as bytes in memory. Here each partition's records
are a ``FileRegion(fd, position, size)`` that the codec only *measures*; the network code sends
it from the segment file. This mirrors Kafka's ``SendBuilder``: size everything first, then emit
the non-record bytes as buffers and the records as separate zero-copy sends.

Layout (all non-flexible, big-endian; ``[x]`` is an int32 count followed by x items)::

    int32   size                      bytes that follow, records included
    int32   correlation_id            response header v0
    int32   throttle_time_ms
    int16   error_code                v7+
    int32   session_id                v7+
    [topic]
      string  name                    int16 length + UTF-8
      [partition]
        int32   partition_index
        int16   error_code
        int64   high_watermark
        int64   last_stable_offset
        int64   log_start_offset      v5+
        [aborted_transaction] | -1    nullable: (int64 producer_id, int64 first_offset)
        int32   preferred_read_replica  v11+
        int32   records length        then the records bytes: the region

Records are the last field of every partition, so the output alternates
``[bytes][region][bytes][region]...``. Empty records are length 0, never null (-1): librdkafka
treats a null record set as invalid.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from logstore.errors import ProtocolError

__all__ = [
    "FETCH_VERSIONS",
    "FetchPartition",
    "FileRegion",
    "decode_fetch_response",
    "encode_fetch_response_parts",
    "read_parts",
]

FETCH_VERSIONS = range(4, 12)
"""Fetch versions ``encode_fetch_response_parts`` can write."""

_INT32_MAX = 2**31 - 1

_HEAD = struct.Struct(">ii")  # size, correlation_id
_THROTTLE = struct.Struct(">i")
_SESSION = struct.Struct(">hi")  # error_code, session_id (v7+)
_COUNT = struct.Struct(">i")
_NAME_LENGTH = struct.Struct(">h")
_PARTITION_V4 = struct.Struct(">ihqq")  # partition_index, error_code, high_watermark, last_stable_offset
_LOG_START = struct.Struct(">q")  # v5+
_ABORTED = struct.Struct(">qq")  # producer_id, first_offset
_REPLICA = struct.Struct(">i")  # preferred_read_replica, v11+


@dataclass(frozen=True, slots=True)
class FileRegion:
    """``size`` bytes of the open file ``fd`` starting at byte ``position``: the records the
    server sends with ``os.sendfile``. The codec never reads it."""

    fd: int
    position: int
    size: int

    def __post_init__(self):
        if self.position < 0 or self.size < 0:
            raise ValueError(f"FileRegion position and size must be >= 0, got {self.position}, {self.size}")


class RegionLike(Protocol):
    """Anything with ``fd``, ``position`` and ``size``, such as ``FileRegion``."""

    fd: int
    position: int
    size: int


@dataclass(frozen=True, slots=True)
class FetchPartition:
    """One partition of a Fetch response.

    ``records`` is a ``FileRegion`` (or any object with fd/position/size) to be sent from a file,
    or bytes to be inlined (tests, small data); size 0 or ``b""`` means no records.
    ``aborted_transactions`` is ``None`` (null, what a broker without transactions sends) or a
    sequence of ``(producer_id, first_offset)``. ``log_start_offset`` is written from v5 and
    ``preferred_read_replica`` from v11 (-1: read from the leader).
    """

    partition: int
    error_code: int = 0
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1
    records: RegionLike | bytes | bytearray | memoryview = b""
    aborted_transactions: Sequence[tuple[int, int]] | None = None
    preferred_read_replica: int = -1


def encode_fetch_response_parts(
    correlation_id: int,
    version: int,
    throttle_time_ms: int,
    error_code: int,
    session_id: int,
    topics: Iterable[tuple[str, Iterable[FetchPartition]]],
) -> list[bytes | Any]:
    """Encode a size-prefixed Fetch response frame as buffers and file regions.

    ``topics`` is a sequence of ``(topic_name, partitions)``. Returns a list of ``bytes`` and
    region objects (never two ``bytes`` in a row, never an empty region): sending each item in
    order, regions via ``os.sendfile``, produces the whole frame. The int32 size prefix counts
    the regions' sizes; no region is read. ``error_code`` and ``session_id`` are written only
    from v7.

    Raises ``ValueError`` for a version outside 4-11, a topic name over 32767 bytes, or a frame
    over 2 GiB.
    """
    if version not in FETCH_VERSIONS:
        raise ValueError(f"Fetch response version {version} is not in {FETCH_VERSIONS}")
    try:
        chunks = _encode(correlation_id, version, throttle_time_ms, error_code, session_id, topics)
    except struct.error as e:  # a field value out of its wire type's range
        raise ValueError(f"cannot encode Fetch v{version} response: {e}") from e
    frame_size = sum(len(c) if isinstance(c, bytearray) else c.size for c in chunks) - _COUNT.size
    if frame_size > _INT32_MAX:
        raise ValueError(f"Fetch response of {frame_size} bytes does not fit an int32 size")
    _COUNT.pack_into(chunks[0], 0, frame_size)
    return [bytes(c) if isinstance(c, bytearray) else c for c in chunks]


def _encode(correlation_id, version, throttle_time_ms, error_code, session_id, topics):
    """The frame as bytearrays alternating with non-empty regions; the size field is left 0."""
    buf = bytearray(_HEAD.pack(0, correlation_id))
    chunks: list[bytearray | Any] = [buf]
    buf += _THROTTLE.pack(throttle_time_ms)
    if version >= 7:
        buf += _SESSION.pack(error_code, session_id)
    topics = list(topics)
    buf += _COUNT.pack(len(topics))
    for name, partitions in topics:
        encoded_name = name.encode()
        if len(encoded_name) > 0x7FFF:
            raise ValueError(f"topic name is {len(encoded_name)} bytes, over the int16 limit")
        buf += _NAME_LENGTH.pack(len(encoded_name))
        buf += encoded_name
        partitions = list(partitions)
        buf += _COUNT.pack(len(partitions))
        for p in partitions:
            buf += _PARTITION_V4.pack(p.partition, p.error_code, p.high_watermark, p.last_stable_offset)
            if version >= 5:
                buf += _LOG_START.pack(p.log_start_offset)
            if p.aborted_transactions is None:
                buf += _COUNT.pack(-1)
            else:
                buf += _COUNT.pack(len(p.aborted_transactions))
                for producer_id, first_offset in p.aborted_transactions:
                    buf += _ABORTED.pack(producer_id, first_offset)
            if version >= 11:
                buf += _REPLICA.pack(p.preferred_read_replica)
            records = p.records
            if isinstance(records, bytes | bytearray | memoryview):
                inline = memoryview(records).cast("B")
                buf += _COUNT.pack(inline.nbytes)
                buf += inline
                continue
            size = _region_size(records)
            buf += _COUNT.pack(size)
            if size:
                buf = bytearray()
                chunks += (records, buf)
    if not buf:
        chunks.pop()
    return chunks


def _region_size(region: Any) -> int:
    try:
        size = region.size
    except AttributeError:
        raise TypeError(
            f"records must be bytes or have fd/position/size, got {type(region).__name__}"
        ) from None
    if size < 0:
        raise ValueError(f"region size must be >= 0, got {size}")
    return size


def read_parts(parts: Iterable[bytes | Any]) -> bytes:
    """Join the parts into one frame, reading each region with ``os.pread``.

    The copying fallback for transports without sendfile (TLS), and a test helper. Raises
    ``OSError`` if a region's file is shorter than the region (the segment shrank).
    """
    out = bytearray()
    for part in parts:
        if isinstance(part, bytes | bytearray | memoryview):
            out += part
            continue
        remaining, position = part.size, part.position
        while remaining:
            chunk = os.pread(part.fd, remaining, position)
            if not chunk:
                raise OSError(f"fd {part.fd} ended at byte {position}, {remaining} bytes short of its region")
            out += chunk
            remaining -= len(chunk)
            position += len(chunk)
    return bytes(out)


def decode_fetch_response(frame: bytes, version: int) -> tuple[int, Any]:
    """Decode a size-prefixed Fetch response frame into ``(correlation_id, kio FetchResponse)``.

    A reader for tests and tools (the server never reads responses). Raises ``ProtocolError``
    if the frame is truncated, has trailing bytes or does not parse.
    """
    from kio.serial import entity_reader
    from kio.serial.errors import SerialError

    from logstore.server.messages import ApiKey, response_class

    frame = bytes(frame)
    if len(frame) < 8:
        raise ProtocolError(f"Fetch response frame of {len(frame)} bytes is too short")
    size, correlation_id = _HEAD.unpack_from(frame)
    if size != len(frame) - 4:
        raise ProtocolError(f"Fetch response size field says {size} bytes, frame has {len(frame) - 4}")
    try:
        body, used = entity_reader(response_class(ApiKey.FETCH, version))(frame, 8)
    except (SerialError, ValueError, UnicodeError) as e:
        raise ProtocolError(f"malformed Fetch v{version} response: {e}") from e
    if 8 + used != len(frame):
        raise ProtocolError(f"Fetch v{version} response has {len(frame) - 8 - used} trailing bytes")
    return correlation_id, body
