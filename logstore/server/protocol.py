"""Sans-IO Kafka protocol codec: bytes in, requests out; responses in, bytes out. No sockets.

Theory of operation:

- ``FrameDecoder`` splits the byte stream into frames (int32 size + payload). It rejects a size
  below 0 or above ``max_frame_bytes`` as soon as the 4 size bytes arrive, before buffering the
  body, so a hostile size cannot make the server allocate.
- ``decode_request(frame)`` reads the fixed 8-byte prefix of every request header (api_key,
  api_version, correlation_id) itself, checks the pair against ``API_TABLE``, then lets kio parse
  the rest of the header (v1, or v2 for flexible versions) and the body. Every failure is a
  ``RequestError`` that carries whichever of the three prefix fields could be read, so the
  server can still answer (ApiVersions) or log before it closes the connection.
- ``encode_response(request_header, body)`` writes size + response header + kio body. The
  response header version comes from the kio class (v0, or v1 for flexible versions; ApiVersions
  always v0, KIP-511).
- Fetch responses are not built here but in ``fetch_response.py``, so records can be sent from
  the segment file (re-exported below).

The fuzz invariant: any bytes given to ``FrameDecoder`` and ``decode_request`` either parse or
raise ``ProtocolError``; nothing else escapes.
"""

from __future__ import annotations

import functools
import io
import struct
from dataclasses import dataclass
from typing import Any, Final, Protocol

from kio.serial import entity_reader, entity_writer
from kio.serial.errors import SerialError
from kio.static.constants import EntityType

from logstore.errors import ProtocolError
from logstore.server.fetch_response import (
    FETCH_VERSIONS,
    FetchPartition,
    FileRegion,
    decode_fetch_response,
    encode_fetch_response_parts,
    read_parts,
)
from logstore.server.messages import (
    API_TABLE,
    UNSUPPORTED_VERSION,
    ApiKey,
    ApiSpec,
    advertised_api_versions,
    api_versions_response,
    request_class,
    response_class,
)

__all__ = [
    "API_TABLE",
    "DEFAULT_MAX_FRAME_BYTES",
    "FETCH_VERSIONS",
    "UNSUPPORTED_VERSION",
    "ApiKey",
    "ApiSpec",
    "FetchPartition",
    "FileRegion",
    "FrameDecoder",
    "FrameSizeError",
    "MalformedRequestError",
    "ProtocolError",
    "Request",
    "RequestError",
    "UnknownApiKeyError",
    "UnsupportedVersionError",
    "advertised_api_versions",
    "api_versions_response",
    "decode_fetch_response",
    "decode_request",
    "encode_fetch_response_parts",
    "encode_response",
    "read_parts",
    "request_class",
    "response_class",
]

DEFAULT_MAX_FRAME_BYTES: Final = 100 * 1024 * 1024

_SIZE = struct.Struct(">i")
_PREFIX = struct.Struct(">hhi")  # api_key, api_version, correlation_id: the same in header v1 and v2

# What kio's native reader raises on bad input: its own DecodeError family, and ValueError for
# over-long varints and negative array lengths. UnicodeError and OverflowError are listed in case
# a field conversion raises them; the fuzz tests check that nothing else gets through.
_DECODE_ERRORS = (SerialError, ValueError, UnicodeError, OverflowError)


# --- Errors -------------------------------------------------------------------------------------


class FrameSizeError(ProtocolError):
    """A frame's int32 size is negative or over ``max_frame_bytes``; close the connection."""

    def __init__(self, size: int, max_frame_bytes: int):
        super().__init__(f"frame size {size} is outside [0, {max_frame_bytes}]")
        self.size = size
        self.max_frame_bytes = max_frame_bytes

    def __reduce__(self):
        return (type(self), (self.size, self.max_frame_bytes))


class RequestError(ProtocolError):
    """A request frame that cannot be decoded.

    ``api_key``, ``api_version`` and ``correlation_id`` are the header fields that could be read,
    ``None`` for those the frame was too short to hold.
    """

    def __init__(
        self,
        message: str,
        api_key: int | None = None,
        api_version: int | None = None,
        correlation_id: int | None = None,
    ):
        super().__init__(message)
        self.api_key = api_key
        self.api_version = api_version
        self.correlation_id = correlation_id

    def __reduce__(self):
        return (type(self), (self.args[0], self.api_key, self.api_version, self.correlation_id))


class MalformedRequestError(RequestError):
    """The frame is too short, truncated, has trailing bytes, or a field does not parse."""


class UnknownApiKeyError(RequestError):
    """The api_key is not in ``API_TABLE``; close the connection."""


class UnsupportedVersionError(RequestError):
    """A known API at a version outside the decodable range.

    For ApiVersions, answer ``api_versions_response(0, error_code=UNSUPPORTED_VERSION)``; for
    anything else, close the connection (the client was told the ranges and ignored them).
    """


# --- Framing ------------------------------------------------------------------------------------


class FrameDecoder:
    """Splits a byte stream into frames: ``feed(data)`` then ``next_frame()`` until it returns None.

    Bytes may arrive in any chunking: whole frames, one byte at a time, or a frame followed by
    the start of the next. A size outside ``[0, max_frame_bytes]`` raises ``FrameSizeError``, and
    every later ``next_frame()`` raises it again: the stream cannot be resynchronised.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES):
        if max_frame_bytes < 0:
            raise ValueError(f"max_frame_bytes must be >= 0, got {max_frame_bytes}")
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._start = 0  # frames before this index were returned; compacted on the next feed
        self._error: FrameSizeError | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes fed but not yet returned in a frame."""
        return len(self._buffer) - self._start

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        # Compacting here, not in next_frame, makes draining n frames from one buffer O(n)
        # rather than O(n^2) memmoves.
        if self._start:
            del self._buffer[: self._start]
            self._start = 0
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next complete frame's payload (size prefix removed), or None if more bytes are needed."""
        if self._error is not None:
            raise self._error
        start = self._start
        if len(self._buffer) - start < _SIZE.size:
            return None
        (size,) = _SIZE.unpack_from(self._buffer, start)
        if size < 0 or size > self.max_frame_bytes:
            self._error = FrameSizeError(size, self.max_frame_bytes)
            raise self._error
        end = start + _SIZE.size + size
        if len(self._buffer) < end:
            return None
        with memoryview(self._buffer) as view, view[start + _SIZE.size : end] as payload:
            frame = bytes(payload)  # one copy; the views are released before the next feed resizes
        self._start = end
        return frame


# --- Requests -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """A decoded request: the header fields plus ``body``, a kio request dataclass of that
    version (``kio.schema.<api>.v<N>.request``).

    Produce bodies keep each partition's ``records`` as the bytes the client sent, undecoded.
    kio represents ``*_ms`` duration fields as ``timedelta`` named without the suffix
    (e.g. ``FetchRequest.max_wait``).
    """

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body: Any

    @property
    def expects_response(self) -> bool:
        """False only for Produce with acks=0, which Kafka never answers."""
        return not (self.api_key == ApiKey.PRODUCE and self.body.acks == 0)


@functools.cache
def _reader(entity_type: type) -> Any:
    return entity_reader(entity_type)


@functools.cache
def _writer(entity_type: type) -> Any:
    return entity_writer(entity_type)


def decode_request(frame: bytes | bytearray | memoryview) -> Request:
    """Decode one request frame (the payload ``FrameDecoder.next_frame`` returns).

    Raises ``MalformedRequestError``, ``UnknownApiKeyError`` or ``UnsupportedVersionError``
    (all ``RequestError``, a ``ProtocolError``) carrying the header fields that could be read.
    """
    # kio's native reader only accepts read-only buffers.
    data = frame if isinstance(frame, bytes) else bytes(frame)
    if len(data) < _PREFIX.size:
        # Name whichever int16 fields (api_key, then api_version) the short frame does hold.
        readable = struct.unpack_from(">" + "h" * min(len(data) // 2, 2), data)
        raise MalformedRequestError(
            f"request of {len(data)} bytes is shorter than the {_PREFIX.size}-byte header prefix", *readable
        )
    api_key, api_version, correlation_id = prefix = _PREFIX.unpack_from(data)
    spec = API_TABLE.get(api_key)
    if spec is None:
        raise UnknownApiKeyError(f"unknown api_key {api_key}", *prefix)
    if not spec.min_decodable <= api_version <= spec.max_version:
        raise UnsupportedVersionError(
            f"{spec.api_key.name} version {api_version} is outside the decodable range "
            f"{spec.min_decodable}-{spec.max_version}",
            *prefix,
        )
    body_type = request_class(api_key, api_version)
    try:
        header, offset = _reader(body_type.__header_schema__)(data, 0)
        body, used = _reader(body_type)(data, offset)
    except _DECODE_ERRORS as e:
        raise MalformedRequestError(
            f"malformed {spec.api_key.name} v{api_version} request: {e}", *prefix
        ) from e
    if offset + used != len(data):
        raise MalformedRequestError(
            f"{spec.api_key.name} v{api_version} request has {len(data) - offset - used} trailing bytes",
            *prefix,
        )
    return Request(api_key, api_version, correlation_id, header.client_id, body)


# --- Responses ----------------------------------------------------------------------------------


class RequestHeaderLike(Protocol):
    """What ``encode_response`` needs from the request: a ``Request`` or a ``RequestError``."""

    api_key: int | None
    api_version: int | None
    correlation_id: int | None


def encode_response(request_header: RequestHeaderLike, body: Any) -> bytes:
    """Encode a size-prefixed response frame for ``body``, a kio response dataclass.

    ``body`` must be the response class of the request's api_key and version, with one exception
    (KIP-511): a v0 ApiVersions body with error 35 may answer an ApiVersions request of any
    version. Fetch responses should go through ``encode_fetch_response_parts`` instead.

    Raises ``ValueError`` if the body does not match the request or a field value is out of
    range, ``TypeError`` if a field has the wrong type.
    """
    api_key, version = request_header.api_key, request_header.api_version
    correlation_id = request_header.correlation_id
    if api_key is None or version is None or correlation_id is None:
        raise ValueError("cannot answer a request whose api_key, api_version or correlation_id is unknown")
    body_type = type(body)
    body_key = getattr(body_type, "__api_key__", None)
    body_version = getattr(body_type, "__version__", None)
    if getattr(body_type, "__type__", None) is not EntityType.response or body_key != api_key:
        raise ValueError(f"{body_type.__name__} does not answer api_key {api_key}")
    downgraded = (
        api_key == ApiKey.API_VERSIONS and body_version == 0 and body.error_code == UNSUPPORTED_VERSION
    )
    if body_version != version and not downgraded:
        raise ValueError(f"{body_type.__name__} is version {body_version}, the request is version {version}")
    header_type = body_type.__header_schema__
    out = io.BytesIO()
    out.write(b"\0\0\0\0")  # size, patched below
    try:
        _writer(header_type)(out, header_type(correlation_id=correlation_id))
        _writer(body_type)(out, body)
    except (SerialError, struct.error) as e:
        raise ValueError(f"cannot encode {body_type.__name__} v{body_version}: {e}") from e
    except (AttributeError, TypeError) as e:  # kio's writers meeting a field of the wrong type
        raise TypeError(f"cannot encode {body_type.__name__} v{body_version}: {e}") from e
    with out.getbuffer() as view:
        _SIZE.pack_into(view, 0, len(view) - _SIZE.size)
    return out.getvalue()
