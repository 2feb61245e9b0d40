"""Which Kafka APIs and versions the server speaks, and the message classes for each.

The message bodies themselves come from kio (``kio.schema.<api>.v<N>``): frozen dataclasses
generated from Apache Kafka's JSON message schemas, one module per API version. This module only
decides *which* of them we accept and advertise, and maps ``(api_key, version)`` to the kio class.
The Fetch response is the one message not built with kio (see ``fetch_response.py``).

Why these ranges (``shared/reference/kafka-protocol.md`` §3, §9): every range is capped below the
first *flexible* version of its API (ApiVersions v3 is the only flexible one we speak), and each
range is chosen to *contain* the single versions that librdkafka < 2.11.1 (Debian's kcat) tests
for before it enables a feature: Produce 3 and 7, Fetch 4 and 10, ListOffsets 1, and v0 of
FindCoordinator, Join/Sync/Heartbeat/LeaveGroup and InitProducerId. Narrowing a range silently
turns off compression or the v2 batch format in those clients.
"""

from __future__ import annotations

import enum
import functools
import sys
from collections.abc import Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode

__all__ = [
    "API_TABLE",
    "ApiKey",
    "ApiSpec",
    "UNSUPPORTED_VERSION",
    "advertised_api_versions",
    "api_versions_response",
    "request_class",
    "response_class",
]

#: Kafka error code 35, answered (in a v0 ApiVersions response) to a too-new ApiVersions request.
UNSUPPORTED_VERSION: Final = 35


class ApiKey(enum.IntEnum):
    """The Kafka API keys this codec knows."""

    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    LEAVE_GROUP = 13
    SYNC_GROUP = 14
    API_VERSIONS = 18
    CREATE_TOPICS = 19
    INIT_PRODUCER_ID = 22


class ApiSpec(NamedTuple):
    """One row of the version table."""

    api_key: ApiKey
    min_version: int
    """Lowest version listed in the ApiVersions response."""
    max_version: int
    """Highest version listed, and the highest that ``decode_request`` accepts."""
    min_decodable: int
    """Lowest version that ``decode_request`` accepts (differs from ``min_version`` only for Produce)."""
    advertised: bool
    """False for an API that is defined and decodable but not listed in ApiVersions (none now)."""


def _spec(api_key: ApiKey, versions: range, *, decodable_from: int | None = None, advertised: bool = True):
    low = versions.start if decodable_from is None else decodable_from
    return ApiSpec(api_key, versions.start, versions.stop - 1, low, advertised)


# Produce v0-2 are advertised but never decoded. Kafka 4.0 does the same (KAFKA-18659):
# librdkafka < 2.11.1 enables LZ4 only if the Produce range contains v0, and the removed
# versions use the pre-v2 message format that the storage layer does not accept. A request at
# v0-2 therefore raises UnsupportedVersionError like any other version we cannot decode.
API_TABLE: Final[Mapping[int, ApiSpec]] = MappingProxyType(
    {
        spec.api_key: spec
        for spec in (
            _spec(ApiKey.API_VERSIONS, range(0, 4)),
            _spec(ApiKey.METADATA, range(0, 9)),
            _spec(ApiKey.PRODUCE, range(0, 9), decodable_from=3),
            _spec(ApiKey.FETCH, range(4, 12)),
            _spec(ApiKey.LIST_OFFSETS, range(1, 6)),
            _spec(ApiKey.INIT_PRODUCER_ID, range(0, 2)),
            _spec(ApiKey.CREATE_TOPICS, range(2, 5)),
            _spec(ApiKey.FIND_COORDINATOR, range(0, 3)),
            _spec(ApiKey.JOIN_GROUP, range(0, 6)),
            _spec(ApiKey.SYNC_GROUP, range(0, 4)),
            _spec(ApiKey.HEARTBEAT, range(0, 4)),
            _spec(ApiKey.LEAVE_GROUP, range(0, 4)),
            _spec(ApiKey.OFFSET_COMMIT, range(2, 8)),
            _spec(ApiKey.OFFSET_FETCH, range(1, 6)),
        )
    }
)
"""Every API the codec knows, by key: the advertised range, the decodable range, and whether it
is advertised yet. The single source for ApiVersions and for ``decode_request``'s version check."""


def advertised_api_versions() -> tuple[tuple[int, int, int], ...]:
    """``(api_key, min_version, max_version)`` for each API to list in ApiVersions, by key."""
    return tuple(
        (int(spec.api_key), spec.min_version, spec.max_version)
        for spec in sorted(API_TABLE.values())
        if spec.advertised
    )


def _check_decodable(api_key: int, version: int) -> None:
    spec = API_TABLE.get(api_key)
    if spec is None or not spec.min_decodable <= version <= spec.max_version:
        raise ValueError(f"api_key {api_key} version {version} is not in the codec's version table")


@functools.cache
def request_class(api_key: int, version: int) -> type[Any]:
    """The kio request dataclass for a decodable ``(api_key, version)``; ``ValueError`` otherwise."""
    _check_decodable(api_key, version)
    return load_request_schema(api_key, version)


@functools.cache
def response_class(api_key: int, version: int) -> type[Any]:
    """The kio response dataclass for a decodable ``(api_key, version)``; ``ValueError`` otherwise.

    For Fetch this is only useful for reading responses (tests); the server hand-encodes Fetch
    responses with ``encode_fetch_response_parts``.
    """
    _check_decodable(api_key, version)
    return load_response_schema(api_key, version)


def api_versions_response(
    version: int,
    *,
    error_code: int = 0,
    throttle_time_ms: int = 0,
) -> Any:
    """An ApiVersions response body of ``version`` listing the advertised ranges.

    To answer a too-new ApiVersions request (KIP-511), build ``api_versions_response(0,
    error_code=UNSUPPORTED_VERSION)`` and pass it to ``encode_response`` with the rejected
    request's header: the client parses it as v0, reads our range for key 18 and retries.
    """
    cls = response_class(ApiKey.API_VERSIONS, version)
    api_version_cls = sys.modules[cls.__module__].ApiVersion  # kio's per-version nested entity
    kwargs: dict[str, Any] = {
        "error_code": ErrorCode(error_code),
        "api_keys": tuple(
            api_version_cls(api_key=key, min_version=low, max_version=high)
            for key, low, high in advertised_api_versions()
        ),
    }
    if version >= 1:
        kwargs["throttle_time"] = timedelta(milliseconds=throttle_time_ms)
    return cls(**kwargs)
