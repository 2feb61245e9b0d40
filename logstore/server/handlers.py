"""Request -> response logic for each Kafka API, with no sockets (testable by direct calls).

``Broker.handle(request)`` takes a decoded ``Request`` and returns the response frame as a list of
parts (``bytes`` and file regions, see ``encode_fetch_response_parts``), or ``None`` when Kafka
sends no response (Produce with acks=0). Requests are served from one ``LogStore`` as a single
node (node id 0) that leads every partition at leader epoch 0.

What each API does, and the Kafka behaviour it follows:

* ApiVersions: the codec's advertised table (``messages.API_TABLE``). A too-new version is
  answered by ``answer_request_error`` with a v0 body and error 35 (KIP-511).
* Metadata: all topics for a null list (v0: an empty list). Unknown topics are created with the
  store's defaults when ``auto_create_topics`` is on and the client allows it (v4+ flag), as
  Kafka's ``auto.create.topics.enable``; creation is synchronous, so the topic is returned ready.
* Produce (v3-8): the partition's bytes go to ``Log.append_batches`` undecoded (size, magic and
  CRC checked there). zstd below v7 is refused with 76, as Kafka does. acks=all answers once the
  batch is durable: ``log.sync()``, except for topics with ``durability="none"``, where written
  to the OS is all that topic ever promises. Idempotent batches go through ``producer_state``.
* Fetch (v4-11): see ``logstore.server.fetch`` (file regions below the high watermark, KIP-74
  limits, long poll woken by ``notify_appended`` after every Produce handled here).
* ListOffsets (v1-5): -1 latest (the high watermark), -2 earliest, -3 max timestamp, else the
  first offset at or after the timestamp, below the high watermark.
* InitProducerId (v0-1): a new producer id, epoch 0; transactions are not supported.
* FindCoordinator (v0-2): this node for a group; transactions (key type 1) are not coordinated
  here: COORDINATOR_NOT_AVAILABLE.
* JoinGroup (v0-5), SyncGroup (v0-3), Heartbeat (v0-3), LeaveGroup (v0-3, v3 in batches): the
  state machine of ``groups.GroupCoordinator``. Join and Sync wait in the connection's thread
  (served in order, as Kafka serves a connection) until the group moves on, ticking the
  coordinator every ``group_poll_s`` so deadlines apply without a timer thread.
* OffsetCommit (v2-7): the coordinator checks member and generation, then the offsets of one
  request go to ``LogStore.commit_offsets`` as one batch of ``__consumer_offsets``, fsynced before
  the answer like an acks=all Produce (not with ``durability="none"``). The v2-4
  ``retention_time`` is ignored (as Kafka >= 2.1 does).
* OffsetFetch (v1-5): the committed offsets, -1 where there is none; v2+ null topics means every
  partition the group committed.
* Produce to an internal topic (``__consumer_offsets``) is refused with INVALID_TOPIC_EXCEPTION, as
  Kafka refuses it; Metadata marks it ``is_internal`` and lists it only when asked for by name.
* CreateTopics (v2-4): partition count and the topic configs of ``topic_configs``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
import time
from datetime import timedelta
from typing import Any

from kio.schema.errors import ErrorCode

from logstore.errors import (
    ConfigError,
    LogClosedError,
    LogStoreError,
    ProtocolError,
    TopicError,
)
from logstore.group_offsets import MAX_METADATA_BYTES, OffsetAndMetadata
from logstore.log import EARLIEST, LATEST, MAX_TIMESTAMP
from logstore.server.fetch import AppendSignal, Fetcher
from logstore.server.groups import GroupConfig, GroupCoordinator, JoinResult, Pending, SyncResult
from logstore.server.messages import (
    UNSUPPORTED_VERSION,
    ApiKey,
    advertised_api_versions,
    response_class,
)
from logstore.server.produce import Appender
from logstore.server.producer_state import ProducerStateManager
from logstore.server.protocol import Request, RequestError, UnsupportedVersionError, encode_response
from logstore.server.topic_configs import log_config_changes
from logstore.store import INTERNAL_TOPICS, validate_topic_name

__all__ = ["Broker", "CloseConnection", "UnsupportedApiError"]

logger = logging.getLogger("logstore.server")

NODE_ID = 0
LEADER_EPOCH = 0
_NO_AUTHORIZED_OPERATIONS = -(2**31)

# Kafka error codes decided here, by name (kio's ErrorCode lists them all).
UNKNOWN_SERVER_ERROR = -1
NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
OFFSET_METADATA_TOO_LARGE = 12
COORDINATOR_NOT_AVAILABLE = 15
INVALID_TOPIC_EXCEPTION = 17
INVALID_REQUIRED_ACKS = 21
REBALANCE_IN_PROGRESS = 27
TOPIC_ALREADY_EXISTS = 36
INVALID_PARTITIONS = 37
INVALID_REPLICATION_FACTOR = 38
INVALID_CONFIG = 40
INVALID_REQUEST = 42


class CloseConnection(ProtocolError):
    """The answer to this request is closing the connection (Kafka has no response for it)."""


class UnsupportedApiError(CloseConnection):
    """A request for an API the codec decodes but this server does not serve."""


@functools.cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


def _make(cls: type, **values: Any) -> Any:
    """Build kio dataclass ``cls`` from ``values``, dropping fields this version does not have.

    One handler then serves every version of an API: e.g. ``leader_epoch`` exists only from
    Metadata v7, ``log_start_offset`` only from Produce v5.
    """
    names = _field_names(cls)
    return cls(**{k: v for k, v in values.items() if k in names})


def _nested(response_cls: type, name: str) -> type:
    """A nested entity class of the same kio module as ``response_cls`` (e.g. the partition class)."""
    return getattr(sys.modules[response_cls.__module__], name)


_ZERO = timedelta(0)
_MS = timedelta(milliseconds=1)


def _ms(duration: timedelta | None) -> int | None:
    """kio decodes ``*_ms`` fields as ``timedelta``; the coordinator counts milliseconds."""
    return None if duration is None else duration // _MS


#: The table we list in ApiVersions (``messages.API_TABLE``). FindCoordinator in it also turns
#: on librdkafka's LZ4 (2.0.2: the range must hold v0; 2.11+: any range), next to Produce v0.
ADVERTISED_API_VERSIONS = advertised_api_versions()


def advertised_api_versions_response(version: int, *, error_code: int = 0) -> Any:
    """An ApiVersions response body of ``version`` listing ``ADVERTISED_API_VERSIONS``."""
    cls = response_class(ApiKey.API_VERSIONS, version)
    api_version_cls = _nested(cls, "ApiVersion")
    return _make(
        cls,
        error_code=ErrorCode(error_code),
        api_keys=tuple(
            api_version_cls(api_key=key, min_version=low, max_version=high)
            for key, low, high in ADVERTISED_API_VERSIONS
        ),
        throttle_time=_ZERO,
    )


class Broker:
    """The request handlers of a one-node Kafka cluster serving ``store``.

    ``advertised_host``/``advertised_port`` are what Metadata tells clients to dial.
    ``default_partitions`` overrides the store's partition count for auto-created topics.
    ``fetch_poll_s`` and ``max_fetch_wait_s`` bound long polls (see ``logstore.server.fetch``).
    ``group_config`` sets the group coordinator (session timeout bounds, initial rebalance delay);
    ``group_poll_s`` is how often a waiting JoinGroup/SyncGroup re-checks deadlines.
    Thread-safe: every connection thread calls ``handle`` concurrently.
    """

    def __init__(
        self,
        store,
        *,
        advertised_host: str,
        advertised_port: int,
        auto_create_topics: bool = True,
        default_partitions: int | None = None,
        fetch_poll_s: float = 0.1,
        max_fetch_wait_s: float = 30.0,
        cluster_id: str = "logstore",
        producer_scan_batches: int = 1000,
        group_config: GroupConfig | None = None,
        group_poll_s: float = 0.05,
    ):
        self.store = store
        self.advertised_host = advertised_host
        self.advertised_port = advertised_port
        self.auto_create_topics = auto_create_topics
        self.default_partitions = default_partitions
        self.cluster_id = cluster_id
        self.producers = ProducerStateManager(store, scan_batches=producer_scan_batches)
        self._appender = Appender(store, self.producers)
        self.appends = AppendSignal()
        self._fetcher = Fetcher(store, self.appends, poll_s=fetch_poll_s, max_wait_s=max_fetch_wait_s)
        self.groups = GroupCoordinator(group_config)
        self.group_poll_s = group_poll_s
        self._handlers = {
            ApiKey.API_VERSIONS: self.api_versions,
            ApiKey.METADATA: self.metadata,
            ApiKey.PRODUCE: self.produce,
            ApiKey.FETCH: self.fetch,
            ApiKey.LIST_OFFSETS: self.list_offsets,
            ApiKey.INIT_PRODUCER_ID: self.init_producer_id,
            ApiKey.CREATE_TOPICS: self.create_topics,
            ApiKey.FIND_COORDINATOR: self.find_coordinator,
            ApiKey.JOIN_GROUP: self.join_group,
            ApiKey.SYNC_GROUP: self.sync_group,
            ApiKey.HEARTBEAT: self.heartbeat,
            ApiKey.LEAVE_GROUP: self.leave_group,
            ApiKey.OFFSET_COMMIT: self.offset_commit,
            ApiKey.OFFSET_FETCH: self.offset_fetch,
        }

    # --- dispatch -----------------------------------------------------------------------------

    def handle(self, request: Request) -> list | None:
        """The response frame for ``request`` as parts, or ``None`` when none is sent (acks=0).

        Raises ``CloseConnection`` when the answer is to close the connection: an API this server
        does not serve (``UnsupportedApiError``), or an acks=0 Produce that failed.
        """
        handler = self._handlers.get(request.api_key)
        if handler is None:
            raise UnsupportedApiError(f"api_key {request.api_key} is not served (not advertised)")
        return handler(request)

    def answer_request_error(self, error: RequestError) -> list | None:
        """The response to a request that failed to decode, if the protocol has one (a too-new
        ApiVersions gets a v0 body with error 35 listing our ranges); ``None``: close instead."""
        if isinstance(error, UnsupportedVersionError) and error.api_key == ApiKey.API_VERSIONS:
            if error.correlation_id is not None and error.api_version is not None:
                body = advertised_api_versions_response(0, error_code=UNSUPPORTED_VERSION)
                return [encode_response(error, body)]
        return None

    def notify_appended(self) -> None:
        """Wake long-polling fetches: something was appended (called after each Produce)."""
        self.appends.notify()

    def close(self) -> None:
        """Wake every long poll so it answers now (later fetches do not wait); answer waiting
        JoinGroup/SyncGroup requests with COORDINATOR_NOT_AVAILABLE."""
        self.appends.close()
        self.groups.close()

    # --- ApiVersions, Metadata ----------------------------------------------------------------

    def api_versions(self, request: Request) -> list:
        return [encode_response(request, advertised_api_versions_response(request.api_version))]

    def metadata(self, request: Request) -> list:
        body, version = request.body, request.api_version
        cls = response_class(ApiKey.METADATA, version)
        topic_cls = _nested(cls, "MetadataResponseTopic")
        partition_cls = _nested(cls, "MetadataResponsePartition")
        if body.topics is None or (version == 0 and not body.topics):
            names = self.store.topics()
        else:
            names = list(dict.fromkeys(t.name for t in body.topics))
        allow_create = self.auto_create_topics and (version < 4 or body.allow_auto_topic_creation)
        topics = []
        for name in names:
            error, partitions = self._topic_partitions(name, allow_create)
            topics.append(
                _make(
                    topic_cls,
                    error_code=ErrorCode(error),
                    name=name,
                    is_internal=name in INTERNAL_TOPICS,
                    partitions=tuple(
                        _make(
                            partition_cls,
                            error_code=ErrorCode(NONE),
                            partition_index=p,
                            leader_id=NODE_ID,
                            leader_epoch=LEADER_EPOCH,
                            replica_nodes=(NODE_ID,),
                            isr_nodes=(NODE_ID,),
                            offline_replicas=(),
                        )
                        for p in range(partitions)
                    ),
                    topic_authorized_operations=_NO_AUTHORIZED_OPERATIONS,
                )
            )
        broker = _make(
            _nested(cls, "MetadataResponseBroker"),
            node_id=NODE_ID,
            host=self.advertised_host,
            port=self.advertised_port,
            rack=None,
        )
        response = _make(
            cls,
            throttle_time=_ZERO,
            brokers=(broker,),
            cluster_id=self.cluster_id,
            controller_id=NODE_ID,
            topics=tuple(topics),
            cluster_authorized_operations=_NO_AUTHORIZED_OPERATIONS,
        )
        return [encode_response(request, response)]

    def _topic_partitions(self, name: str, allow_create: bool) -> tuple[int, int]:
        """``(error_code, partition count)`` of a topic, creating it if allowed and missing."""
        try:
            return NONE, self.store.describe_topic(name).partitions
        except TopicError:
            pass
        try:
            validate_topic_name(name)
        except (TopicError, TypeError):
            return INVALID_TOPIC_EXCEPTION, 0
        if not allow_create:
            return UNKNOWN_TOPIC_OR_PARTITION, 0
        try:
            self.store.create_topic(name, self.default_partitions)
            logger.info("auto-created topic %r", name)
        except TopicError:  # another connection created it first
            pass
        try:
            return NONE, self.store.describe_topic(name).partitions
        except TopicError:
            return UNKNOWN_TOPIC_OR_PARTITION, 0

    # --- Produce ------------------------------------------------------------------------------

    def produce(self, request: Request) -> list | None:
        body, version = request.body, request.api_version
        acks = body.acks
        cls = response_class(ApiKey.PRODUCE, version)
        topic_cls = _nested(cls, "TopicProduceResponse")
        partition_cls = _nested(cls, "PartitionProduceResponse")
        appended = False
        failed = []
        topics = []
        for topic in body.topic_data:
            partitions = []
            for data in topic.partition_data:
                if acks not in (0, 1, -1):
                    error, base_offset, log_start, message = INVALID_REQUIRED_ACKS, -1, -1, f"acks={acks}"
                elif body.transactional_id is not None:
                    error, base_offset, log_start, message = INVALID_REQUEST, -1, -1, "transactions are not supported"
                elif topic.name in INTERNAL_TOPICS:
                    error, base_offset, log_start, message = (
                        INVALID_TOPIC_EXCEPTION, -1, -1, f"cannot produce to internal topic {topic.name}"
                    )
                else:
                    error, base_offset, log_start, message = self._appender.append(
                        topic.name, data.index, data.records, version, acks
                    )
                    appended = appended or (error == NONE)
                if error != NONE:
                    failed.append(f"{topic.name}-{data.index}: {ErrorCode(error).name}")
                partitions.append(
                    _make(
                        partition_cls,
                        index=data.index,
                        error_code=ErrorCode(error),
                        base_offset=base_offset,
                        log_append_time=None,
                        log_start_offset=log_start,
                        record_errors=(),
                        error_message=message,
                    )
                )
            topics.append(_make(topic_cls, name=topic.name, partition_responses=tuple(partitions)))
        if appended:
            self.notify_appended()
        if acks == 0:
            if failed:
                # Kafka's rule: an acks=0 producer learns of an error only by losing the connection
                raise CloseConnection(f"acks=0 produce failed ({', '.join(failed)})")
            return None
        return [encode_response(request, _make(cls, responses=tuple(topics), throttle_time=_ZERO))]

    # --- Fetch --------------------------------------------------------------------------------

    def fetch(self, request: Request) -> list:
        return self._fetcher.fetch(request)

    # --- ListOffsets --------------------------------------------------------------------------

    def list_offsets(self, request: Request) -> list:
        body, version = request.body, request.api_version
        cls = response_class(ApiKey.LIST_OFFSETS, version)
        topic_cls = _nested(cls, "ListOffsetsTopicResponse")
        partition_cls = _nested(cls, "ListOffsetsPartitionResponse")
        topics = []
        for topic in body.topics:
            partitions = []
            for p in topic.partitions:
                error, timestamp, offset = self._list_offset(topic.name, p.partition_index, p.timestamp)
                partitions.append(
                    _make(
                        partition_cls,
                        partition_index=p.partition_index,
                        error_code=ErrorCode(error),
                        timestamp=timestamp,
                        offset=offset,
                        leader_epoch=LEADER_EPOCH,
                    )
                )
            topics.append(_make(topic_cls, name=topic.name, partitions=tuple(partitions)))
        return [encode_response(request, _make(cls, throttle_time=_ZERO, topics=tuple(topics)))]

    def _list_offset(self, topic: str, partition: int, timestamp: int) -> tuple[int, int, int]:
        """``(error_code, timestamp, offset)``; -1, -1 when no record is that late."""
        try:
            log = self.store.log(topic, partition)
            high_watermark = log.high_watermark
            if timestamp == LATEST:
                return NONE, -1, high_watermark
            if timestamp == EARLIEST:
                return NONE, -1, log.log_start_offset
            if timestamp < 0 and timestamp != MAX_TIMESTAMP:
                return INVALID_REQUEST, -1, -1
            found = log.offset_for_timestamp(timestamp)
        except (TopicError, LogClosedError):
            return UNKNOWN_TOPIC_OR_PARTITION, -1, -1
        if found is None or found.offset >= high_watermark:
            return NONE, -1, -1
        return NONE, found.timestamp_ms, found.offset

    # --- FindCoordinator ----------------------------------------------------------------------

    def find_coordinator(self, request: Request) -> list:
        """Groups are coordinated by this node; transactions (key type 1) are not supported."""
        cls = response_class(ApiKey.FIND_COORDINATOR, request.api_version)
        if getattr(request.body, "key_type", 0) != 0:
            response = _make(
                cls,
                throttle_time=_ZERO,
                error_code=ErrorCode(COORDINATOR_NOT_AVAILABLE),
                error_message="logstore does not coordinate transactions",
                node_id=-1,
                host="",
                port=-1,
            )
        else:
            response = _make(
                cls,
                throttle_time=_ZERO,
                error_code=ErrorCode(NONE),
                error_message=None,
                node_id=NODE_ID,
                host=self.advertised_host,
                port=self.advertised_port,
            )
        return [encode_response(request, response)]

    # --- consumer groups ----------------------------------------------------------------------

    def _await(self, pending: Pending, limit_ms: int, late):
        """Wait for a Join/Sync answer, ticking the coordinator so its deadlines apply; after
        ``limit_ms`` (a safety net: the coordinator's own deadlines come first) answer ``late``."""
        deadline = time.monotonic() + limit_ms / 1000
        while not pending.wait(self.group_poll_s):
            self.groups.tick()
            if time.monotonic() > deadline:
                logger.warning("a group request waited %d ms; answering REBALANCE_IN_PROGRESS", limit_ms)
                return late
        return pending.result

    def join_group(self, request: Request) -> list:
        body, version = request.body, request.api_version
        session_ms = _ms(body.session_timeout)
        rebalance_ms = _ms(getattr(body, "rebalance_timeout", None))
        pending = self.groups.join(
            body.group_id,
            body.member_id,
            protocol_type=body.protocol_type,
            protocols=[(p.name, p.metadata) for p in body.protocols],
            session_timeout_ms=session_ms,
            rebalance_timeout_ms=rebalance_ms,
            client_id=request.client_id or "",
        )
        config = self.groups.config
        limit = max(session_ms, rebalance_ms or 0) + config.initial_rebalance_delay_ms + 10_000
        result: JoinResult = self._await(pending, limit, JoinResult(REBALANCE_IN_PROGRESS, member_id=body.member_id))
        cls = response_class(ApiKey.JOIN_GROUP, version)
        member_cls = _nested(cls, "JoinGroupResponseMember")
        response = _make(
            cls,
            throttle_time=_ZERO,
            error_code=ErrorCode(result.error_code),
            generation_id=result.generation_id,
            protocol_name=result.protocol_name,
            leader=result.leader_id,
            member_id=result.member_id,
            members=tuple(
                _make(member_cls, member_id=member_id, group_instance_id=None, metadata=metadata)
                for member_id, metadata in result.members
            ),
        )
        return [encode_response(request, response)]

    def sync_group(self, request: Request) -> list:
        body = request.body
        pending = self.groups.sync(
            body.group_id,
            body.generation_id,
            body.member_id,
            {a.member_id: a.assignment for a in body.assignments},
        )
        config = self.groups.config
        result: SyncResult = self._await(
            pending, config.max_session_timeout_ms + 10_000, SyncResult(REBALANCE_IN_PROGRESS)
        )
        cls = response_class(ApiKey.SYNC_GROUP, request.api_version)
        response = _make(
            cls, throttle_time=_ZERO, error_code=ErrorCode(result.error_code), assignment=result.assignment
        )
        return [encode_response(request, response)]

    def heartbeat(self, request: Request) -> list:
        body = request.body
        error = self.groups.heartbeat(body.group_id, body.generation_id, body.member_id)
        cls = response_class(ApiKey.HEARTBEAT, request.api_version)
        return [encode_response(request, _make(cls, throttle_time=_ZERO, error_code=ErrorCode(error)))]

    def leave_group(self, request: Request) -> list:
        body, version = request.body, request.api_version
        cls = response_class(ApiKey.LEAVE_GROUP, version)
        if version < 3:
            (error,) = self.groups.leave(body.group_id, [body.member_id])
            response = _make(cls, throttle_time=_ZERO, error_code=ErrorCode(error))
        else:
            member_ids = [m.member_id for m in body.members]
            errors = self.groups.leave(body.group_id, member_ids)
            member_cls = _nested(cls, "MemberResponse")
            response = _make(
                cls,
                throttle_time=_ZERO,
                error_code=ErrorCode(NONE),
                members=tuple(
                    member_cls(member_id=m.member_id, group_instance_id=m.group_instance_id, error_code=ErrorCode(e))
                    for m, e in zip(body.members, errors, strict=True)
                ),
            )
        return [encode_response(request, response)]

    def offset_commit(self, request: Request) -> list:
        body, version = request.body, request.api_version
        cls = response_class(ApiKey.OFFSET_COMMIT, version)
        topic_cls = _nested(cls, "OffsetCommitResponseTopic")
        partition_cls = _nested(cls, "OffsetCommitResponsePartition")
        errors = self._commit(body, version)
        topics = tuple(
            topic_cls(
                name=topic.name,
                partitions=tuple(
                    partition_cls(partition_index=p.partition_index, error_code=ErrorCode(errors[(topic.name, p.partition_index)]))
                    for p in topic.partitions
                ),
            )
            for topic in body.topics
        )
        return [encode_response(request, _make(cls, throttle_time=_ZERO, topics=topics))]

    def _commit(self, body, version: int) -> dict[tuple[str, int], int]:
        """Validate and store one OffsetCommit; the error code of each (topic, partition)."""
        wanted = [(t.name, p) for t in body.topics for p in t.partitions]
        error = self.groups.validate_commit(body.group_id, body.generation_id_or_member_epoch, body.member_id)
        if error != NONE:
            return {(name, p.partition_index): error for name, p in wanted}
        errors: dict[tuple[str, int], int] = {}
        offsets: dict[tuple[str, int], OffsetAndMetadata] = {}
        for name, p in wanted:
            key = (name, p.partition_index)
            metadata = p.committed_metadata or ""
            if len(metadata.encode("utf-8")) > MAX_METADATA_BYTES:
                errors[key] = OFFSET_METADATA_TOO_LARGE
            elif name in INTERNAL_TOPICS or not self._partition_exists(name, p.partition_index):
                errors[key] = UNKNOWN_TOPIC_OR_PARTITION
            else:
                errors[key] = NONE
                offsets[key] = OffsetAndMetadata(
                    p.committed_offset, metadata, getattr(p, "committed_leader_epoch", -1)
                )
        if offsets:
            try:
                # fsynced before the answer (unless the store never fsyncs), as Kafka answers a
                # commit once every replica has it (offsets.commit.required.acks=-1) and as
                # Produce with acks=all is answered here
                self.store.commit_offsets(body.group_id, offsets, sync=True)
            except LogClosedError:
                failed = COORDINATOR_NOT_AVAILABLE
            except TopicError:  # deleted meanwhile
                failed = UNKNOWN_TOPIC_OR_PARTITION
            except (LogStoreError, OSError, ValueError, TypeError):
                logger.exception("storing offsets of group %r failed", body.group_id)
                failed = UNKNOWN_SERVER_ERROR
            else:
                failed = NONE
            if failed != NONE:
                errors.update((key, failed) for key in offsets)
        return errors

    def _partition_exists(self, topic: str, partition: int) -> bool:
        try:
            self.store.log(topic, partition)
        except (TopicError, LogClosedError):
            return False
        return True

    def offset_fetch(self, request: Request) -> list:
        body, version = request.body, request.api_version
        cls = response_class(ApiKey.OFFSET_FETCH, version)
        topic_cls = _nested(cls, "OffsetFetchResponseTopic")
        partition_cls = _nested(cls, "OffsetFetchResponsePartition")
        try:
            committed = self.store.fetch_offsets(body.group_id)
        except LogClosedError:
            committed = {}
        if body.topics is None:
            wanted: dict[str, list[int]] = {}
            for topic, partition in sorted(committed):
                wanted.setdefault(topic, []).append(partition)
        else:
            wanted = {}
            for t in body.topics:
                wanted.setdefault(t.name, []).extend(t.partition_indexes)
        none = OffsetAndMetadata(-1, "", -1)
        topics = tuple(
            topic_cls(
                name=name,
                partitions=tuple(
                    _make(
                        partition_cls,
                        partition_index=p,
                        committed_offset=committed.get((name, p), none).offset,
                        committed_leader_epoch=committed.get((name, p), none).leader_epoch,
                        metadata=committed.get((name, p), none).metadata,
                        error_code=ErrorCode(NONE),
                    )
                    for p in partitions
                ),
            )
            for name, partitions in wanted.items()
        )
        response = _make(cls, throttle_time=_ZERO, topics=topics, error_code=ErrorCode(NONE))
        return [encode_response(request, response)]

    # --- InitProducerId -----------------------------------------------------------------------

    def init_producer_id(self, request: Request) -> list:
        cls = response_class(ApiKey.INIT_PRODUCER_ID, request.api_version)
        if request.body.transactional_id is not None:
            response = _make(
                cls, throttle_time=_ZERO, error_code=ErrorCode(INVALID_REQUEST), producer_id=-1, producer_epoch=-1
            )
        else:
            producer_id = self.producers.ids.allocate()
            logger.debug("allocated producer id %d to %s", producer_id, request.client_id)
            response = _make(
                cls, throttle_time=_ZERO, error_code=ErrorCode(NONE), producer_id=producer_id, producer_epoch=0
            )
        return [encode_response(request, response)]

    # --- CreateTopics -------------------------------------------------------------------------

    def create_topics(self, request: Request) -> list:
        body = request.body
        cls = response_class(ApiKey.CREATE_TOPICS, request.api_version)
        result_cls = _nested(cls, "CreatableTopicResult")
        results = []
        for topic in body.topics:
            error, message = self._create_topic(topic, body.validate_only)
            results.append(_make(result_cls, name=topic.name, error_code=ErrorCode(error), error_message=message))
        return [encode_response(request, _make(cls, throttle_time=_ZERO, topics=tuple(results)))]

    def _create_topic(self, topic, validate_only: bool) -> tuple[int, str | None]:
        try:
            validate_topic_name(topic.name)
        except TopicError as e:
            return INVALID_TOPIC_EXCEPTION, str(e)
        if topic.replication_factor not in (-1, 1):
            return INVALID_REPLICATION_FACTOR, "a single node stores one replica (replication factor 1)"
        partitions = topic.num_partitions
        if topic.assignments:
            if partitions != -1:
                return INVALID_REQUEST, "give either num_partitions or assignments"
            if any(tuple(a.broker_ids) != (NODE_ID,) for a in topic.assignments):
                return INVALID_REQUEST, f"every partition must be assigned to node {NODE_ID} only"
            partitions = len(topic.assignments)
        if partitions == -1:
            partitions = self.default_partitions or self.store.default_partitions
        if partitions < 1:
            return INVALID_PARTITIONS, f"num_partitions must be >= 1, got {partitions}"
        try:
            changes = log_config_changes(((c.name, c.value) for c in topic.configs), self.store.default_config)
        except ConfigError as e:
            return INVALID_CONFIG, str(e)
        try:
            self.store.describe_topic(topic.name)
            return TOPIC_ALREADY_EXISTS, f"topic {topic.name!r} already exists"
        except TopicError:
            pass
        if validate_only:
            return NONE, None
        try:
            self.store.create_topic(topic.name, partitions, changes)
        except ConfigError as e:
            return INVALID_CONFIG if changes else INVALID_PARTITIONS, str(e)
        except TopicError as e:
            return TOPIC_ALREADY_EXISTS, str(e)
        logger.info("created topic %r with %d partitions %s", topic.name, partitions, changes or "")
        return NONE, None
