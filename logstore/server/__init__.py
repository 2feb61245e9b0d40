"""The Kafka-protocol server for logstore: ``serve(store, port=0)`` / ``logstore serve``.

Layers, each usable alone: ``protocol`` (with ``messages`` and ``fetch_response``) is the sans-IO
codec, turning bytes into requests and responses into bytes (or, for Fetch, into buffers and file
regions to ``os.sendfile``); ``handlers.Broker`` turns a decoded request into a response with no
sockets; ``server.Server`` moves the bytes (threads, sockets, the sendfile loop).

The core (``logstore``) never imports this package. The names below are loaded on first use
(PEP 562), so importing ``logstore.server.cli`` to build the command line does not load the
codec (kio) or the server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_CODEC_EXPORTS = (
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
)
_SERVER_EXPORTS = ("Server", "ServerStats", "serve")

__all__ = [*_SERVER_EXPORTS, *_CODEC_EXPORTS]

_MODULE_OF = {
    **{name: "logstore.server.protocol" for name in _CODEC_EXPORTS},
    **{name: "logstore.server.server" for name in _SERVER_EXPORTS},
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from logstore.server.protocol import (  # noqa: F401
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
    from logstore.server.server import Server, ServerStats, serve  # noqa: F401


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
