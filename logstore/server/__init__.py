"""The Kafka-protocol server for logstore. For now only its sans-IO codec (``protocol``).

Nothing here imports sockets: ``logstore.server.protocol`` turns bytes into requests and
responses into bytes (or, for Fetch, into buffers and file regions to ``os.sendfile``).
"""

from logstore.server.protocol import (
    API_TABLE,
    DEFAULT_MAX_FRAME_BYTES,
    FETCH_VERSIONS,
    UNSUPPORTED_VERSION,
    ApiKey,
    ApiSpec,
    FetchPartition,
    FileRegion,
    FrameDecoder,
    FrameSizeError,
    MalformedRequestError,
    Request,
    RequestError,
    UnknownApiKeyError,
    UnsupportedVersionError,
    advertised_api_versions,
    api_versions_response,
    decode_fetch_response,
    decode_request,
    encode_fetch_response_parts,
    encode_response,
    read_parts,
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
