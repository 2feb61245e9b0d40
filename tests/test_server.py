"""The Kafka server: handlers called directly (no sockets), then the socket server over loopback.

Requests are built by kafka-python's protocol classes, as a client would send them, decoded by
our codec and answered by ``Broker``; responses are decoded by kafka-python. Socket tests use raw
sockets so every byte on the wire is under the test's control. Every wait is bounded.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
from kafka.protocol.admin.topics import CreateTopicsRequest, CreateTopicsResponse
from kafka.protocol.consumer.fetch import FetchRequest, FetchResponse
from kafka.protocol.consumer.offsets import ListOffsetsRequest, ListOffsetsResponse
from kafka.protocol.metadata.api_versions import ApiVersionsRequest, ApiVersionsResponse
from kafka.protocol.metadata.find_coordinator import FindCoordinatorRequest, FindCoordinatorResponse
from kafka.protocol.metadata.metadata import MetadataRequest, MetadataResponse
from kafka.protocol.producer import (
    InitProducerIdRequest,
    InitProducerIdResponse,
    ProduceRequest,
    ProduceResponse,
)
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder

from logstore.config import LogConfig
from logstore.errors import ConfigError
from logstore.recovery import CLEAN_SHUTDOWN_NAME
from logstore.server import Server, serve
from logstore.server.handlers import Broker, CloseConnection
from logstore.server.producer_state import PRODUCER_IDS_FILE, ProducerIdAllocator, next_sequence
from logstore.server.protocol import decode_request, read_parts
from logstore.server.topic_configs import log_config_changes
from logstore.store import LogStore

RESPONSES = {
    ApiVersionsRequest: ApiVersionsResponse,
    MetadataRequest: MetadataResponse,
    ProduceRequest: ProduceResponse,
    FetchRequest: FetchResponse,
    ListOffsetsRequest: ListOffsetsResponse,
    InitProducerIdRequest: InitProducerIdResponse,
    CreateTopicsRequest: CreateTopicsResponse,
}
TS = 1_700_000_000_000


# --- helpers ------------------------------------------------------------------------------------


def frame_of(message_class, version, correlation_id=7, **fields):
    message = message_class[version](**fields)
    message.with_header(correlation_id=correlation_id, client_id="test")
    return bytes(message.encode(header=True, framed=True))


def decode_response(message_class, version, frame):
    return RESPONSES[message_class][version].decode(frame, header=True, framed=True)


def call(broker, message_class, version, **fields):
    """Send one request through our decoder and ``broker``; the kafka-python-decoded response."""
    request = decode_request(frame_of(message_class, version, **fields)[4:])
    parts = broker.handle(request)
    if parts is None:
        return None
    return decode_response(message_class, version, read_parts(parts))


def batch(*values, compression=0, producer_id=-1, epoch=-1, sequence=-1, timestamp=TS, keys=None, headers=()):
    builder = MemoryRecordsBuilder(
        magic=2,
        compression_type=compression,
        batch_size=1 << 24,
        producer_id=producer_id,
        producer_epoch=epoch,
        base_sequence=sequence,
    )
    for i, value in enumerate(values):
        key = keys[i] if keys else b"k%d" % i
        builder.append(timestamp=timestamp + i, key=key, value=value, headers=list(headers))
    builder.close()
    return bytes(builder.buffer())


def produce(broker, topic, records, *, partition=0, version=8, acks=1, transactional_id=None):
    Topic = ProduceRequest.TopicProduceData
    response = call(
        broker,
        ProduceRequest,
        version,
        transactional_id=transactional_id,
        acks=acks,
        timeout_ms=5000,
        topic_data=[Topic(name=topic, partition_data=[Topic.PartitionProduceData(index=partition, records=records)])],
    )
    if response is None:
        return None
    p = response.responses[0].partition_responses[0]
    return p.error_code, p.base_offset


def fetch_fields(partitions, *, max_wait_ms=0, min_bytes=1, max_bytes=50 << 20, session_id=0):
    """``partitions``: [(topic, partition, offset, partition_max_bytes)]; consecutive entries of
    one topic share a topic entry (a topic may appear again later, as in a real request)."""
    Topic = FetchRequest.FetchTopic
    runs: list[tuple[str, list]] = []
    for topic, partition, offset, limit in partitions:
        if not runs or runs[-1][0] != topic:
            runs.append((topic, []))
        runs[-1][1].append(Topic.FetchPartition(partition=partition, fetch_offset=offset, partition_max_bytes=limit))
    return dict(
        max_wait_ms=max_wait_ms,
        min_bytes=min_bytes,
        max_bytes=max_bytes,
        session_id=session_id,
        topics=[Topic(topic=t, partitions=ps) for t, ps in runs],
    )


def fetch(broker, partitions, version=11, **options):
    return call(broker, FetchRequest, version, **fetch_fields(partitions, **options))


def records_of(data):
    return [record for b in MemoryRecords(data) for record in b]


@pytest.fixture
def store(tmp_path):
    s = LogStore(tmp_path / "data", background=False)
    yield s
    s.close()


@pytest.fixture
def broker(store):
    b = Broker(store, advertised_host="127.0.0.1", advertised_port=9092, fetch_poll_s=0.05)
    yield b
    b.close()


# --- ApiVersions, Metadata ----------------------------------------------------------------------


@pytest.mark.parametrize("version", range(4))
def test_api_versions(broker, version):
    response = call(broker, ApiVersionsRequest, version)
    assert response.error_code == 0
    ranges = {k.api_key: (k.min_version, k.max_version) for k in response.api_keys}
    assert ranges[0] == (0, 8) and ranges[1] == (4, 11) and ranges[18] == (0, 3)
    assert ranges[10] == (0, 2)  # FindCoordinator (also librdkafka's LZ4 gate)
    assert {k: ranges[k] for k in (8, 9, 11, 12, 13, 14)} == {
        8: (2, 7), 9: (1, 5), 11: (0, 5), 12: (0, 3), 13: (0, 3), 14: (0, 3)
    }


def test_advertised_ranges_hold_the_versions_librdkafka_2_0_gates_on(broker):
    """librdkafka < 2.11.1 (Debian's kcat) enables a feature only if our range *contains* one
    exact version; narrowing a range silently disables compression or batch format v2."""
    response = call(broker, ApiVersionsRequest, 3)
    ranges = {k.api_key: range(k.min_version, k.max_version + 1) for k in response.api_keys}
    for api_key, version in [(0, 0), (0, 3), (0, 7), (1, 4), (1, 10), (2, 1), (10, 0), (22, 0),
                             (11, 0), (12, 0), (13, 0), (14, 0), (9, 1), (8, 2)]:
        assert version in ranges[api_key], (api_key, version)


@pytest.mark.parametrize("version", range(3))
def test_find_coordinator_answers_this_node_for_groups(broker, version):
    request = decode_request(frame_of(FindCoordinatorRequest, version, key="g")[4:])
    frame = read_parts(broker.handle(request))
    response = FindCoordinatorResponse[version].decode(frame, header=True, framed=True)
    assert (response.error_code, response.node_id, response.host, response.port) == (0, 0, "127.0.0.1", 9092)


def test_find_coordinator_has_no_transaction_coordinator(broker):
    request = decode_request(frame_of(FindCoordinatorRequest, 2, key="tx", key_type=1)[4:])
    response = FindCoordinatorResponse[2].decode(read_parts(broker.handle(request)), header=True, framed=True)
    assert response.error_code == 15


def test_metadata_all_topics_and_advertised_broker(broker, store):
    store.create_topic("a", 2)
    store.create_topic("b", 1)
    for version, topics in ((0, []), (1, None), (8, None)):
        response = call(broker, MetadataRequest, version, topics=topics)
        assert [(b.node_id, b.host, b.port) for b in response.brokers] == [(0, "127.0.0.1", 9092)]
        assert {t.name: len(t.partitions) for t in response.topics} == {"a": 2, "b": 1}
        partition = response.topics[0].partitions[0]
        assert (partition.leader_id, partition.replica_nodes, partition.isr_nodes) == (0, [0], [0])
        if version >= 7:
            assert partition.leader_epoch == 0


def test_metadata_auto_creates_topics(broker, store):
    topic = MetadataRequest.MetadataRequestTopic
    response = call(broker, MetadataRequest, 8, topics=[topic(name="new")], allow_auto_topic_creation=True)
    assert (response.topics[0].error_code, len(response.topics[0].partitions)) == (0, 1)
    assert store.topics() == ["new"]
    response = call(broker, MetadataRequest, 8, topics=[topic(name="other")], allow_auto_topic_creation=False)
    assert response.topics[0].error_code == 3 and store.topics() == ["new"]
    response = call(broker, MetadataRequest, 8, topics=[topic(name="bad/name")], allow_auto_topic_creation=True)
    assert response.topics[0].error_code == 17 and store.topics() == ["new"]


def test_metadata_auto_create_off_and_partition_count(store):
    off = Broker(store, advertised_host="h", advertised_port=1, auto_create_topics=False)
    topic = MetadataRequest.MetadataRequestTopic
    assert call(off, MetadataRequest, 1, topics=[topic(name="x")]).topics[0].error_code == 3
    three = Broker(store, advertised_host="h", advertised_port=1, default_partitions=3)
    assert len(call(three, MetadataRequest, 1, topics=[topic(name="x")]).topics[0].partitions) == 3


# --- Produce ------------------------------------------------------------------------------------


def test_produce_assigns_contiguous_offsets_and_stores_the_bytes(broker, store):
    store.create_topic("t")
    assert produce(broker, "t", batch(b"a", b"b", b"c")) == (0, 0)
    assert produce(broker, "t", batch(b"d") + batch(b"e", b"f")) == (0, 3)
    records = store.read("t", 0, 0)
    assert [(r.offset, r.value) for r in records] == list(enumerate([b"a", b"b", b"c", b"d", b"e", b"f"]))


def test_produce_acks_zero_gets_no_response(broker, store):
    store.create_topic("t")
    assert produce(broker, "t", batch(b"x"), acks=0) is None
    assert store.log("t", 0).log_end_offset == 1
    with pytest.raises(CloseConnection, match="unknown_topic_or_partition"):  # Kafka closes on an acks=0 error
        produce(broker, "missing", batch(b"x"), acks=0)


def test_produce_errors_leave_the_log_unchanged(broker, store):
    store.create_topic("t", config={"max_batch_bytes": 1000})
    good = batch(b"ok")
    corrupt = bytearray(good)
    corrupt[-1] ^= 0xFF
    assert produce(broker, "missing", good)[0] == 3
    assert produce(broker, "t", good, partition=5)[0] == 3
    assert produce(broker, "t", bytes(corrupt))[0] == 2  # CRC
    assert produce(broker, "t", good[:-3])[0] == 2  # truncated batch
    assert produce(broker, "t", b"\0" * 70)[0] == 2  # garbage
    assert produce(broker, "t", batch(os.urandom(2000)))[0] == 10  # over max_batch_bytes
    assert produce(broker, "t", b"")[0] == 87
    assert produce(broker, "t", good, acks=2)[0] == 21
    assert produce(broker, "t", good, transactional_id="tx")[0] == 42
    assert store.log("t", 0).log_end_offset == 0 and store.topics() == ["t"]


def test_keyless_records_are_refused_by_compacted_topics(broker, store):
    store.create_topic("compacted", config={"cleanup_policy": "compact"})
    assert produce(broker, "compacted", batch(b"v", keys=[None]))[0] == 87
    assert produce(broker, "compacted", batch(b"v", keys=[b"k"])) == (0, 0)


@pytest.mark.parametrize("version", range(3, 9))
def test_zstd_needs_produce_v7(broker, store, version):
    store.create_topic("t")
    error, _ = produce(broker, "t", batch(b"z" * 100, compression=4), version=version)
    assert error == (76 if version < 7 else 0)
    assert produce(broker, "t", batch(b"g" * 100, compression=1), version=version)[0] == 0


def test_acks_all_waits_for_fsync_except_durability_none(broker, store, monkeypatch):
    store.create_topic("interval")
    store.create_topic("none", config={"durability": "none"})
    produce(broker, "interval", batch(b"x"), acks=1)
    log = store.log("interval", 0)
    assert log.durable_offset == 0  # acks=1: written, not yet fsynced (flush_ms has not passed)
    produce(broker, "interval", batch(b"y"), acks=-1)
    assert log.durable_offset == log.log_end_offset == 2
    synced = []
    none_log = store.log("none", 0)
    monkeypatch.setattr(none_log, "sync", lambda: synced.append(1))
    assert produce(broker, "none", batch(b"z"), acks=-1) == (0, 0)
    assert synced == []


# --- Idempotent producers -----------------------------------------------------------------------


def init_producer_id(broker, version=1):
    response = call(broker, InitProducerIdRequest, version, transactional_id=None, transaction_timeout_ms=1000)
    assert response.error_code == 0 and response.producer_epoch == 0
    return response.producer_id


def test_producer_ids_are_never_reused_across_restarts(tmp_path):
    ids = ProducerIdAllocator(str(tmp_path), block_size=3)
    first = [ids.allocate() for _ in range(4)]
    assert first == [0, 1, 2, 3]
    again = ProducerIdAllocator(str(tmp_path), block_size=3)
    assert again.allocate() == 6  # the rest of the reserved block is skipped
    assert (tmp_path / PRODUCER_IDS_FILE).exists()


def test_init_producer_id_rejects_transactions(broker):
    response = call(broker, InitProducerIdRequest, 0, transactional_id="tx", transaction_timeout_ms=1000)
    assert response.error_code == 42
    assert init_producer_id(broker, 0) == 0 and init_producer_id(broker) == 1


def test_retried_batch_is_acknowledged_with_its_offset_and_written_once(broker, store):
    store.create_topic("t")
    pid = init_producer_id(broker)
    first = batch(b"a", b"b", producer_id=pid, epoch=0, sequence=0)
    second = batch(b"c", producer_id=pid, epoch=0, sequence=2)
    assert produce(broker, "t", first, acks=-1) == (0, 0)
    assert produce(broker, "t", second, acks=-1) == (0, 2)
    assert produce(broker, "t", first, acks=-1) == (0, 0)  # retry of an older in-flight batch
    assert produce(broker, "t", second, acks=-1) == (0, 2)
    assert store.log("t", 0).log_end_offset == 3
    # a gap in the sequence, and a batch whose range matches nothing remembered
    assert produce(broker, "t", batch(b"d", producer_id=pid, epoch=0, sequence=5))[0] == 45
    assert produce(broker, "t", batch(b"d", b"e", producer_id=pid, epoch=0, sequence=2))[0] == 45
    assert produce(broker, "t", batch(b"d", producer_id=pid, epoch=0, sequence=3)) == (0, 3)
    # other producers and partitions are independent
    other = init_producer_id(broker)
    assert produce(broker, "t", batch(b"o", producer_id=other, epoch=0, sequence=0)) == (0, 4)
    assert store.log("t", 0).log_end_offset == 5


def test_only_the_last_five_batches_are_remembered(broker, store):
    store.create_topic("t")
    pid = init_producer_id(broker)
    batches = [batch(b"v%d" % i, producer_id=pid, epoch=0, sequence=i) for i in range(7)]
    for i, b in enumerate(batches):
        assert produce(broker, "t", b) == (0, i)
    assert produce(broker, "t", batches[2]) == (0, 2)
    assert produce(broker, "t", batches[1])[0] == 45  # forgotten: not a known retry
    assert store.log("t", 0).log_end_offset == 7


def test_producer_epochs(broker, store):
    store.create_topic("t")
    pid = init_producer_id(broker)
    assert produce(broker, "t", batch(b"a", producer_id=pid, epoch=1, sequence=0)) == (0, 0)
    assert produce(broker, "t", batch(b"b", producer_id=pid, epoch=0, sequence=1))[0] == 47
    assert produce(broker, "t", batch(b"b", producer_id=pid, epoch=2, sequence=4))[0] == 45
    assert produce(broker, "t", batch(b"b", producer_id=pid, epoch=2, sequence=0)) == (0, 1)
    # a producer the partition knows nothing about may start anywhere (its state aged out)
    assert produce(broker, "t", batch(b"c", producer_id=pid + 100, epoch=0, sequence=42)) == (0, 2)


def test_sequence_wraps_at_int32_max():
    assert next_sequence(5) == 6
    assert next_sequence(2**31 - 1) == 0
    assert next_sequence(2**31 - 3, 4) == 1


def test_producer_state_survives_a_restart(tmp_path):
    data = tmp_path / "data"
    with LogStore(data, background=False) as store:
        store.create_topic("t")
        broker = Broker(store, advertised_host="h", advertised_port=1)
        pid = init_producer_id(broker)
        batches = [batch(b"v%d" % i, producer_id=pid, epoch=0, sequence=2 * i, keys=[b"a", b"b"]) for i in range(3)]
        batches = [batch(b"x%d" % i, b"y%d" % i, producer_id=pid, epoch=0, sequence=2 * i) for i in range(3)]
        for i, b in enumerate(batches):
            assert produce(broker, "t", b, acks=-1) == (0, 2 * i)
        store.append("t", [b"plain"], partition=0)  # non-idempotent appends in between
    with LogStore(data, background=False) as store:
        broker = Broker(store, advertised_host="h", advertised_port=1)
        assert produce(broker, "t", batches[1], acks=-1) == (0, 2)  # still recognised as a retry
        assert produce(broker, "t", batch(b"n", producer_id=pid, epoch=0, sequence=9))[0] == 45
        assert produce(broker, "t", batch(b"n", producer_id=pid, epoch=0, sequence=6)) == (0, 7)
        assert init_producer_id(broker) > pid
        assert store.log("t", 0).log_end_offset == 8


def test_idempotent_producer_must_send_one_batch_per_partition(broker, store):
    store.create_topic("t")
    two = batch(b"a", producer_id=1, epoch=0, sequence=0) + batch(b"b", producer_id=1, epoch=0, sequence=1)
    assert produce(broker, "t", two)[0] == 87


def test_concurrent_retries_are_written_once(broker, store):
    store.create_topic("t")
    pid = init_producer_id(broker)
    b = batch(b"once" * 100, producer_id=pid, epoch=0, sequence=0)
    results = []
    threads = [threading.Thread(target=lambda: results.append(produce(broker, "t", b))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [(0, 0)] * 8
    assert store.log("t", 0).log_end_offset == 1


# --- Fetch --------------------------------------------------------------------------------------


def test_fetch_returns_segment_bytes_and_watermarks(broker, store):
    store.create_topic("t")
    produce(broker, "t", batch(b"a", b"b"))
    produce(broker, "t", batch(b"c", compression=4))
    for version in (4, 7, 11):
        response = fetch(broker, [("t", 0, 1, 1 << 20)], version=version)
        partition = response.responses[0].partitions[0]
        assert (partition.error_code, partition.high_watermark, partition.last_stable_offset) == (0, 3, 3)
        # starts at the batch holding offset 1 (the client skips offset 0)
        assert [(r.offset, r.value) for r in records_of(partition.records)] == [(0, b"a"), (1, b"b"), (2, b"c")]
        if version >= 5:
            assert partition.log_start_offset == 0
        if version >= 7:
            assert (response.error_code, response.session_id) == (0, 0)
    log = store.log("t", 0)
    assert fetch(broker, [("t", 0, 0, 1 << 20)]).responses[0].partitions[0].records == log.read_slice(0).read()


def test_fetch_errors_and_every_partition_answered_in_order(broker, store):
    store.create_topic("t", 2)
    produce(broker, "t", batch(b"x"))
    response = fetch(broker, [("t", 1, 0, 100), ("t", 0, 5, 100), ("t", 7, 0, 100), ("nope", 0, 0, 100), ("t", 0, 1, 100)])
    got = [(r.topic, p.partition_index, p.error_code, p.records) for r in response.responses for p in r.partitions]
    assert got == [("t", 1, 0, b""), ("t", 0, 1, b""), ("t", 7, 3, b""), ("nope", 0, 3, b""), ("t", 0, 0, b"")]
    out_of_range = response.responses[0].partitions[1]
    assert (out_of_range.high_watermark, out_of_range.log_start_offset) == (1, 0)


def test_fetch_session_ids_are_not_supported(broker, store):
    store.create_topic("t")
    response = fetch(broker, [("t", 0, 0, 100)], version=7, session_id=12)
    assert response.error_code == 70 and response.responses == []


def test_kip74_first_batch_is_delivered_even_above_the_limits(broker, store):
    store.create_topic("a")
    store.create_topic("b")
    produce(broker, "a", batch(b"A" * 5000) + batch(b"small"))
    produce(broker, "b", batch(b"B" * 5000))
    response = fetch(broker, [("a", 0, 0, 1000), ("b", 0, 0, 1000)], max_bytes=2000)
    a, b = (r.partitions[0] for r in response.responses)
    assert [r.value for r in records_of(a.records)] == [b"A" * 5000]  # whole first batch only
    assert b.records == b""  # not the first non-empty partition: nothing that does not fit
    # the response limit counts across partitions
    produce(broker, "b", batch(b"c"))
    response = fetch(broker, [("b", 0, 1, 1 << 20), ("a", 0, 1, 1 << 20)], max_bytes=200)
    b, a = (r.partitions[0] for r in response.responses)
    assert [r.value for r in records_of(b.records)] == [b"c"]
    assert [r.value for r in records_of(a.records)] == [b"small"]
    response = fetch(broker, [("b", 0, 0, 1 << 20), ("a", 0, 1, 1 << 20)], max_bytes=5200)
    b, a = (r.partitions[0] for r in response.responses)
    assert len(records_of(b.records)) == 2 and a.records == b""


def test_fetch_spans_segment_boundaries(broker, store):
    store.create_topic("t", config={"segment_bytes": 1024})
    values = [os.urandom(100) for _ in range(60)]
    for v in values:
        produce(broker, "t", batch(v))
    assert len(store.log("t", 0).segments) > 5
    got, offset = [], 0
    for _ in range(200):
        if offset == 60:
            break
        data = fetch(broker, [("t", 0, offset, 1 << 20)]).responses[0].partitions[0].records
        for record in records_of(data):
            if record.offset >= offset:
                got.append(record.value)
                offset = record.offset + 1
    assert got == values


def test_fetch_below_the_high_watermark_only(tmp_path):
    with LogStore(tmp_path / "d", background=False) as store:
        store.create_topic("t", config={"durability": "append"})
        broker = Broker(store, advertised_host="h", advertised_port=1)
        produce(broker, "t", batch(b"a"))
        log = store.log("t", 0)
        assert log.high_watermark == 1
        partition = fetch(broker, [("t", 0, 0, 100)]).responses[0].partitions[0]
        assert partition.high_watermark == 1 and len(records_of(partition.records)) == 1


def test_long_poll_wakes_on_produce(broker, store):
    store.create_topic("t")
    result = {}

    def poll():
        start = time.monotonic()
        result["response"] = fetch(broker, [("t", 0, 0, 1 << 20)], max_wait_ms=10_000)
        result["seconds"] = time.monotonic() - start

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.2)
    assert thread.is_alive()
    produce(broker, "t", batch(b"wake"))
    thread.join(5)
    assert not thread.is_alive() and result["seconds"] < 3
    assert [r.value for r in records_of(result["response"].responses[0].partitions[0].records)] == [b"wake"]


def test_long_poll_notices_direct_appends_and_min_bytes(broker, store):
    store.create_topic("t")
    result = {}

    def poll():
        result["response"] = fetch(broker, [("t", 0, 0, 1 << 20)], max_wait_ms=10_000, min_bytes=300)

    thread = threading.Thread(target=poll)
    thread.start()
    store.append("t", [b"small"], partition=0)  # below min_bytes, and not through the broker
    time.sleep(0.3)
    assert thread.is_alive()
    store.append("t", [b"x" * 400], partition=0)
    thread.join(5)
    assert not thread.is_alive()
    assert len(records_of(result["response"].responses[0].partitions[0].records)) == 2


def test_long_poll_is_bounded_by_max_wait_and_by_close(broker, store):
    store.create_topic("t")
    start = time.monotonic()
    response = fetch(broker, [("t", 0, 0, 100)], max_wait_ms=300)
    assert 0.25 < time.monotonic() - start < 2 and response.responses[0].partitions[0].records == b""
    done = threading.Event()
    thread = threading.Thread(target=lambda: (fetch(broker, [("t", 0, 0, 100)], max_wait_ms=20_000), done.set()))
    thread.start()
    time.sleep(0.1)
    broker.close()
    assert done.wait(3)
    thread.join(1)


def test_fetch_slice_outlives_a_deleted_segment(broker, store):
    store.create_topic("t")
    produce(broker, "t", batch(b"kept"))
    request = decode_request(frame_of(FetchRequest, 11, **fetch_fields([("t", 0, 0, 1 << 20)]))[4:])
    parts = broker.handle(request)
    region = next(p for p in parts if not isinstance(p, bytes))
    expected = os.pread(region.fd, region.size, region.position)
    os.unlink(region.path)  # what retention does; the slice keeps the file open
    frame = read_parts(parts)
    assert expected in frame


# --- ListOffsets --------------------------------------------------------------------------------


def list_offsets(broker, topic, timestamp, version=5, partition=0):
    Topic = ListOffsetsRequest.ListOffsetsTopic
    response = call(
        broker,
        ListOffsetsRequest,
        version,
        replica_id=-1,
        isolation_level=0,
        topics=[Topic(name=topic, partitions=[Topic.ListOffsetsPartition(partition_index=partition, timestamp=timestamp)])],
    )
    p = response.topics[0].partitions[0]
    return p.error_code, p.timestamp, p.offset


@pytest.mark.parametrize("version", [1, 2, 5])
def test_list_offsets(broker, store, version):
    store.create_topic("t")
    produce(broker, "t", batch(b"a", b"b", timestamp=1000))  # timestamps 1000, 1001
    produce(broker, "t", batch(b"c", timestamp=5000))
    assert list_offsets(broker, "t", -2, version) == (0, -1, 0)
    assert list_offsets(broker, "t", -1, version) == (0, -1, 3)
    assert list_offsets(broker, "t", 1001, version) == (0, 1001, 1)
    assert list_offsets(broker, "t", 1002, version) == (0, 5000, 2)
    assert list_offsets(broker, "t", 9999, version) == (0, -1, -1)
    assert list_offsets(broker, "t", -3, version) == (0, 5000, 2)
    assert list_offsets(broker, "missing", -1, version)[0] == 3
    assert list_offsets(broker, "t", -1, version, partition=3)[0] == 3


# --- CreateTopics -------------------------------------------------------------------------------


def create_topics(broker, *topics, version=4, validate_only=False):
    T = CreateTopicsRequest.CreatableTopic
    request_topics = [
        T(
            name=name,
            num_partitions=partitions,
            replication_factor=replication,
            assignments=[],
            configs=[T.CreatableTopicConfig(name=k, value=v) for k, v in configs.items()],
        )
        for name, partitions, replication, configs in topics
    ]
    response = call(broker, CreateTopicsRequest, version, topics=request_topics, timeout_ms=1000, validate_only=validate_only)
    return [(t.name, t.error_code) for t in response.topics]


@pytest.mark.parametrize("version", [2, 3, 4])
def test_create_topics(broker, store, version):
    configs = {"segment.bytes": "2048", "retention.ms": "-1", "cleanup.policy": "delete,compact", "max.message.bytes": "5000"}
    assert create_topics(
        broker,
        ("a", 3, 1, configs),
        ("b", -1, -1, {}),
        ("a", 1, 1, {}),
        ("c", 1, 3, {}),
        ("d", 0, 1, {}),
        ("e", 1, 1, {"unknown.config": "1"}),
        ("f", 1, 1, {"segment.bytes": "big"}),
        ("g", 1, 1, {"segment.bytes": "10"}),
        ("bad name", 1, 1, {}),
        version=version,
    ) == [("a", 0), ("b", 0), ("a", 36), ("c", 38), ("d", 37), ("e", 40), ("f", 40), ("g", 40), ("bad name", 17)]
    assert store.topics() == ["a", "b"]
    a = store.describe_topic("a")
    assert a.partitions == 3
    assert (a.config.segment_bytes, a.config.retention_ms, a.config.cleanup_policy) == (2048, None, "compact,delete")
    assert a.config.max_batch_bytes == 5000
    assert store.describe_topic("b").partitions == 1
    assert create_topics(broker, ("v", 1, 1, {}), version=version, validate_only=True) == [("v", 0)]
    assert "v" not in store.topics()


def test_topic_config_mapping():
    base = LogConfig()
    assert log_config_changes(
        [("retention.bytes", "-1"), ("flush.messages", str(2**63 - 1)), ("logstore.durability", "append"),
         ("compression.type", "producer"), ("segment.ms", None)],
        base,
    ) == {"retention_bytes": None, "flush_messages": None, "durability": "append"}
    for bad in [("compression.type", "zstd"), ("logstore.durability", "sometimes"), ("cleanup.policy", "keep"),
                ("retention.ms", "0"), ("x", "1")]:
        with pytest.raises(ConfigError):
            log_config_changes([bad], base)


# --- The socket server --------------------------------------------------------------------------


def connect(server, timeout=5.0):
    sock = socket.create_connection((server.host, server.port), timeout=timeout)
    return sock


def recv_exact(sock, n):
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(min(n - len(out), 1 << 20))
        if not chunk:
            raise ConnectionError(f"closed after {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


def recv_frame(sock):
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    return struct.pack(">i", size) + recv_exact(sock, size)


def roundtrip(sock, message_class, version, correlation_id=7, **fields):
    sock.sendall(frame_of(message_class, version, correlation_id, **fields))
    return decode_response(message_class, version, recv_frame(sock))


def wait_for(predicate, timeout=5.0):
    """Poll ``predicate`` until true or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return value


def is_closed(sock, timeout=5.0):
    """True if the server closed the connection (EOF or reset) within ``timeout``."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1 << 16) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.fixture
def server(store):
    with serve(store, port=0, fetch_poll_s=0.05) as s:
        yield s


def test_serve_binds_loopback_and_answers_in_order(server, store):
    assert server.host == "127.0.0.1" and server.port > 0
    assert server.bootstrap_servers == f"127.0.0.1:{server.port}"
    store.create_topic("t")
    with connect(server) as sock:
        # pipelined: three requests sent at once are answered in order
        sock.sendall(frame_of(ApiVersionsRequest, 3, 1) + frame_of(MetadataRequest, 8, 2, topics=None)
                     + frame_of(ApiVersionsRequest, 0, 3))
        assert [struct.unpack_from(">i", recv_frame(sock), 4)[0] for _ in range(3)] == [1, 2, 3]
        response = roundtrip(sock, MetadataRequest, 8, topics=None)
        assert (response.brokers[0].host, response.brokers[0].port) == ("127.0.0.1", server.port)


def test_too_new_api_versions_is_answered_then_the_connection_continues(server):
    with connect(server) as sock:
        sock.sendall(frame_of(ApiVersionsRequest, 4, 99))
        frame = recv_frame(sock)
        response = ApiVersionsResponse[0].decode(frame, header=True, framed=True)
        assert response.header.correlation_id == 99 and response.error_code == 35
        assert (18, 0, 3) in [(k.api_key, k.min_version, k.max_version) for k in response.api_keys]
        assert roundtrip(sock, ApiVersionsRequest, 3).error_code == 0


def _bad_inputs():
    api_versions = frame_of(ApiVersionsRequest, 0)
    return {
        "garbage": b"\x00\x00\x00\x10" + b"\xde\xad\xbe\xef" * 4,
        "negative-size": struct.pack(">i", -5) + b"abc",
        "oversize": struct.pack(">i", 2**31 - 1),
        "unknown-api-key": struct.pack(">ihhih", 10, 999, 0, 1, -1),
        "unsupported-version": frame_of(FetchRequest, 3, **fetch_fields([("t", 0, 0, 10)])),
        "produce-v2": frame_of(ProduceRequest, 2, acks=1, timeout_ms=10, topic_data=[]),
        "short-header": struct.pack(">ih", 2, 18),
        "trailing-bytes": struct.pack(">i", len(api_versions) - 4 + 3) + api_versions[4:] + b"xyz",
    }


@pytest.mark.parametrize("name", list(_bad_inputs()))
def test_bad_input_closes_only_that_connection(server, store, name, caplog):
    store.create_topic("t")
    store.append("t", [b"before"], partition=0)
    caplog.set_level(logging.INFO, logger="logstore.server")
    with connect(server) as good:
        assert roundtrip(good, ApiVersionsRequest, 3).error_code == 0
        with connect(server) as bad:
            bad.sendall(_bad_inputs()[name])
            assert is_closed(bad)
        assert roundtrip(good, ApiVersionsRequest, 3).error_code == 0  # unaffected
    assert store.log("t", 0).log_end_offset == 1 and store.topics() == ["t"]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "closing connection" in warnings[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)


def test_oversize_frame_is_refused_before_its_body_arrives(store):
    with serve(store, port=0, max_frame_bytes=1000) as server, connect(server) as sock:
        sock.sendall(struct.pack(">i", 1001) + b"x" * 10)  # the rest never comes
        assert is_closed(sock, timeout=3)


def test_truncated_frame_then_close_is_logged_once(server, caplog):
    caplog.set_level(logging.INFO, logger="logstore.server")
    frame = frame_of(ApiVersionsRequest, 3)
    with connect(server) as sock:
        sock.sendall(frame[: len(frame) // 2])
    wait_for(lambda: any("middle" in r.getMessage() for r in caplog.records))
    assert sum("middle" in r.getMessage() for r in caplog.records) == 1
    with connect(server) as sock:
        assert roundtrip(sock, ApiVersionsRequest, 3).error_code == 0


def test_idle_connections_and_slow_requests_are_closed(store):
    with serve(store, port=0, idle_timeout_s=0.3) as server:
        with connect(server) as idle:
            assert is_closed(idle, timeout=3)
        with connect(server) as slow:
            frame = frame_of(ApiVersionsRequest, 3)
            start = time.monotonic()
            for byte in frame[:-1]:  # one byte every 0.1 s never completes the frame in time
                try:
                    slow.sendall(bytes([byte]))
                except OSError:
                    break
                time.sleep(0.1)
                if time.monotonic() - start > 2:
                    break
            assert is_closed(slow, timeout=3)
            assert time.monotonic() - start < 3


def test_connections_beyond_the_maximum_are_refused(store):
    with serve(store, port=0, max_connections=2) as server:
        a, b = connect(server), connect(server)
        try:
            assert roundtrip(a, ApiVersionsRequest, 3).error_code == 0
            assert roundtrip(b, ApiVersionsRequest, 3).error_code == 0
            with connect(server) as c:
                assert is_closed(c)
            assert server.stats.connections_refused == 1
        finally:
            a.close()
            b.close()
        assert wait_for(lambda: server.connection_count == 0)
        with connect(server) as d:
            assert roundtrip(d, ApiVersionsRequest, 3).error_code == 0


def test_produce_and_acks_zero_over_the_socket(server, store):
    store.create_topic("t")
    Topic = ProduceRequest.TopicProduceData
    with connect(server) as sock:
        fields = dict(transactional_id=None, timeout_ms=1000,
                      topic_data=[Topic(name="t", partition_data=[Topic.PartitionProduceData(index=0, records=batch(b"a"))])])
        sock.sendall(frame_of(ProduceRequest, 8, 1, acks=0, **fields))  # never answered
        response = roundtrip(sock, ProduceRequest, 8, 2, acks=1, **fields)
        assert response.header.correlation_id == 2
        assert response.responses[0].partition_responses[0].base_offset == 1
        fields["topic_data"][0].name = "missing"
        sock.sendall(frame_of(ProduceRequest, 8, 3, acks=0, **fields))
        assert is_closed(sock)  # an acks=0 producer learns of an error by losing the connection


def _segment_record_bytes(store, topic):
    log = store.log(topic, 0)
    return log.read_slice(0, max_bytes=1 << 30).read()


def _fill_large_partition(store, topic, megabytes, *, segment_bytes=None):
    config = {"segment_bytes": segment_bytes} if segment_bytes else None
    store.create_topic(topic, config=config)
    chunk = [os.urandom(1000) for _ in range(1000)]  # ~1 MB per batch, incompressible
    for _ in range(megabytes):
        store.append(topic, chunk, partition=0)


def test_fetch_records_go_through_sendfile_only(store, monkeypatch, count_preads):
    _fill_large_partition(store, "big", 4)
    sent_by_sendfile = []
    real_sendfile = os.sendfile

    def counting_sendfile(out_fd, in_fd, offset, count):
        sent = real_sendfile(out_fd, in_fd, offset, count)
        sent_by_sendfile.append(sent)
        return sent

    expected = _segment_record_bytes(store, "big")
    read_by_python = count_preads
    read_by_python.clear()
    monkeypatch.setattr(os, "sendfile", counting_sendfile)
    with serve(store, port=0, transport="sendfile") as server, connect(server) as sock:
        sock.sendall(frame_of(FetchRequest, 11, **fetch_fields([("big", 0, 0, 64 << 20)])))
        frame = recv_frame(sock)
        monkeypatch.undo()
        assert wait_for(lambda: sum(sent_by_sendfile) == len(expected))  # the server thread counts after sending
        stats = server.stats
    records = decode_response(FetchRequest, 11, frame).responses[0].partitions[0].records
    assert records == expected
    assert stats.bytes_sendfile == len(expected) and stats.bytes_copied == 0 and stats.bytes_mapped == 0
    # Python read only batch headers (read_slice walks them), never the records themselves
    # finding the slice reads batch headers and at most one index interval, never the records
    assert sum(read_by_python) < 16 * 1024 < len(expected) // 100


def test_loopback_fetches_are_mapped_sends_that_python_never_reads(server, store, monkeypatch, count_preads):
    """``auto`` (the default) sends a loopback peer's records from a memory map of the segment:
    the kernel copies them (no sendfile, no record byte read by Python); small regions go by
    sendfile; the bytes are those of the file."""
    _fill_large_partition(store, "big", 4)
    expected = _segment_record_bytes(store, "big")
    sendfile_calls = []
    real_sendfile = os.sendfile
    monkeypatch.setattr(os, "sendfile", lambda *a: sendfile_calls.append(a) or real_sendfile(*a))
    count_preads.clear()
    with connect(server) as sock:
        sock.sendall(frame_of(FetchRequest, 11, **fetch_fields([("big", 0, 0, 64 << 20)])))
        records = decode_response(FetchRequest, 11, recv_frame(sock)).responses[0].partitions[0].records
        assert records == expected
        assert wait_for(lambda: server.stats.bytes_mapped == len(expected))
        assert sendfile_calls == [] and server.stats.bytes_copied == 0
        assert sum(count_preads) < 16 * 1024 < len(expected) // 100
        # a region under 256 KiB goes by sendfile (a map would be remade for each small read)
        store.create_topic("small")
        store.append("small", [b"v%d" % i for i in range(100)], partition=0)
        sock.sendall(frame_of(FetchRequest, 11, **fetch_fields([("small", 0, 0, 1 << 20)])))
        small = decode_response(FetchRequest, 11, recv_frame(sock)).responses[0].partitions[0].records
        assert small == _segment_record_bytes(store, "small")
        assert wait_for(lambda: server.stats.bytes_sendfile == len(small)) and len(sendfile_calls) >= 1
        assert server.stats.bytes_mapped == len(expected)


def test_a_segment_truncated_under_a_mapped_send_closes_only_that_connection(store, monkeypatch):
    """The kernel meets a page the file lost: EFAULT, not SIGBUS; the connection is closed, as
    with a file that sendfile finds shorter; the server keeps serving."""
    from logstore.segment import SegmentFile

    _fill_large_partition(store, "big", 4)
    expected = _segment_record_bytes(store, "big")
    request = frame_of(FetchRequest, 11, **fetch_fields([("big", 0, 0, 64 << 20)]))
    with serve(store, port=0, transport="mapped") as server:
        with connect(server) as sock:  # maps the whole segment
            sock.sendall(request)
            assert decode_response(FetchRequest, 11, recv_frame(sock)).responses[0].partitions[0].records == expected
        real_view = SegmentFile.view

        def view_then_truncate(self, position, size):
            view = real_view(self, position, size)
            os.truncate(self.path, 4096)  # behind the map's back, as a racing truncation would
            return view

        monkeypatch.setattr(SegmentFile, "view", view_then_truncate)
        with connect(server) as sock:
            sock.sendall(request)
            with pytest.raises((ConnectionError, EOFError, OSError)):
                frame = recv_frame(sock)
                decode_response(FetchRequest, 11, frame)
                raise EOFError("a whole response arrived")
        monkeypatch.undo()
        assert wait_for(lambda: server.connection_count == 0)
        with connect(server) as other:
            assert roundtrip(other, ApiVersionsRequest, 3).error_code == 0


@pytest.mark.skipif(not hasattr(socket, "TCP_CORK"), reason="TCP_CORK is Linux-only")
def test_responses_with_records_are_corked_then_uncorked(store, monkeypatch):
    """Corked, a region goes out in full segments only; uncorked after it, the tail leaves at once
    (left corked, it would wait up to 200 ms). Responses of buffers alone are never corked."""
    from logstore.server import server as server_module

    _fill_large_partition(store, "big", 2)
    calls = []
    real_cork = server_module._cork

    def recording_cork(connection, on):
        ok = real_cork(connection, on)
        calls.append((on, ok, connection.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK)))
        return ok

    monkeypatch.setattr(server_module, "_cork", recording_cork)
    with serve(store, port=0, transport="sendfile") as server, connect(server) as sock:
        assert roundtrip(sock, ApiVersionsRequest, 3).error_code == 0
        assert calls == []
        sock.sendall(frame_of(FetchRequest, 11, **fetch_fields([("big", 0, 0, 64 << 20)])))
        records = decode_response(FetchRequest, 11, recv_frame(sock)).responses[0].partitions[0].records
    assert records == _segment_record_bytes(store, "big")
    assert wait_for(lambda: len(calls) == 2)
    assert calls == [(1, True, 1), (0, True, 0)]


def test_copy_path_and_fallback_send_the_same_bytes(store, monkeypatch):
    _fill_large_partition(store, "big", 2)
    expected = _segment_record_bytes(store, "big")
    request = frame_of(FetchRequest, 11, **fetch_fields([("big", 0, 0, 64 << 20)]))
    with serve(store, port=0, transport="copy") as server, connect(server) as sock:
        sock.sendall(request)
        assert decode_response(FetchRequest, 11, recv_frame(sock)).responses[0].partitions[0].records == expected
        assert wait_for(lambda: server.stats.bytes_copied == len(expected)) and server.stats.bytes_sendfile == 0

    def unsupported(*args):
        raise OSError(errno.EINVAL, "sendfile not supported here")

    monkeypatch.setattr(os, "sendfile", unsupported)
    with serve(store, port=0, transport="sendfile") as server, connect(server) as sock:
        for _ in range(2):
            sock.sendall(request)
            assert decode_response(FetchRequest, 11, recv_frame(sock)).responses[0].partitions[0].records == expected
        assert wait_for(lambda: server.stats.bytes_copied == 2 * len(expected))


def test_slow_reader_gets_every_byte_through_partial_sends(server, store):
    _fill_large_partition(store, "big", 6)
    expected = _segment_record_bytes(store, "big")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # forces EAGAIN on the server side
    sock.settimeout(10)
    sock.connect((server.host, server.port))
    with sock:
        sock.sendall(frame_of(FetchRequest, 11, **fetch_fields([("big", 0, 0, 64 << 20)])))
        time.sleep(0.3)  # let the server fill the socket buffers and wait for writability
        frame = recv_frame(sock)
    assert decode_response(FetchRequest, 11, frame).responses[0].partitions[0].records == expected


def test_client_disconnecting_mid_sendfile_is_a_normal_event(server, store, caplog):
    caplog.set_level(logging.DEBUG, logger="logstore.server")
    _fill_large_partition(store, "big", 8)
    for _ in range(3):
        sock = connect(server)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
        sock.sendall(frame_of(FetchRequest, 11, **fetch_fields([("big", 0, 0, 64 << 20)])))
        recv_exact(sock, 1000)
        sock.close()
    assert wait_for(lambda: server.connection_count == 0)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    with connect(server) as sock:
        assert roundtrip(sock, ApiVersionsRequest, 3).error_code == 0


def test_close_returns_promptly_during_a_long_poll(store):
    store.create_topic("t")
    server = serve(store, port=0)
    sock = connect(server)
    sock.sendall(frame_of(FetchRequest, 11, **fetch_fields([("t", 0, 0, 100)], max_wait_ms=30_000)))
    time.sleep(0.2)
    start = time.monotonic()
    server.close()
    assert time.monotonic() - start < 3
    sock.close()
    assert server.connection_count == 0


def test_server_never_closes_the_store(store):
    with serve(store, port=0):
        pass
    assert not store.closed
    store.create_topic("still-open")


def test_cli_serve_stops_cleanly_on_sigterm(tmp_path):
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "logstore.server.cli", "--data", str(data), "--port", "0", "--log-level", "WARNING"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert " on 127.0.0.1:" in line, line + proc.stderr.read()
        port = int(line.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(frame_of(MetadataRequest, 4, topics=[MetadataRequest.MetadataRequestTopic(name="auto")],
                                  allow_auto_topic_creation=True))
            response = decode_response(MetadataRequest, 4, recv_frame(sock))
            assert response.topics[0].error_code == 0
            Topic = ProduceRequest.TopicProduceData
            sock.sendall(frame_of(ProduceRequest, 8, acks=-1, transactional_id=None, timeout_ms=1000,
                                  topic_data=[Topic(name="auto", partition_data=[
                                      Topic.PartitionProduceData(index=0, records=batch(b"kept"))])]))
            assert decode_response(ProduceRequest, 8, recv_frame(sock)).responses[0].partition_responses[0].error_code == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert "stopped cleanly" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert (data / "auto-0" / CLEAN_SHUTDOWN_NAME).exists()
    with LogStore(data, background=False) as store:
        assert store.log("auto", 0).was_clean_shutdown
        assert [r.value for r in store.read("auto", 0, 0)] == [b"kept"]


def test_cli_reports_a_locked_data_dir_and_a_busy_port(store, tmp_path, capsys):
    from logstore.server.cli import main

    assert main(["--data", store.data_dir, "--port", "0"]) == 2
    assert "in use by process" in capsys.readouterr().err
    with serve(store, port=0) as server:
        assert main(["--data", str(tmp_path / "other"), "--port", str(server.port)]) == 1
        assert "cannot listen" in capsys.readouterr().err


def test_cli_default_frame_limit_is_the_codecs():
    from logstore.server import cli, protocol

    assert cli.DEFAULT_MAX_FRAME_BYTES == protocol.DEFAULT_MAX_FRAME_BYTES


def test_server_options_are_validated(store):
    with pytest.raises(ValueError):
        Server(store, max_connections=0)
    with pytest.raises(ValueError):
        Server(store, idle_timeout_s=0)


@pytest.mark.parametrize("transport", ["sendfile", "mapped"])
def test_a_client_that_stops_reading_is_cut_off_after_the_send_timeout(store, transport):
    _fill_large_partition(store, "big", 8)
    with serve(store, port=0, send_timeout_s=0.5, transport=transport) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((server.host, server.port))
        with sock:
            sock.sendall(frame_of(FetchRequest, 11, **fetch_fields([("big", 0, 0, 64 << 20)])))
            if transport == "sendfile":
                assert wait_for(lambda: server.stats.bytes_sendfile > 0)
            assert wait_for(lambda: server.connection_count == 0, timeout=10)  # never read: dropped
        with connect(server) as other:
            assert roundtrip(other, ApiVersionsRequest, 3).error_code == 0


def test_cli_parser_hooks_into_a_subcommand_table():
    import argparse

    from logstore.server.cli import add_parser, run

    parser = argparse.ArgumentParser(prog="logstore")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--port", "0", "--no-auto-create-topics", "--partitions", "3"])
    assert (args.func, args.port, args.auto_create_topics, args.partitions, args.data) == (run, 0, False, 3, "./data")
    assert (args.host, args.idle_timeout_ms, args.max_connections) == ("127.0.0.1", 600_000, 1000)


def test_a_region_whose_segment_file_was_closed_or_shrank_is_not_sent(store, tmp_path):
    """The fd of a closed segment may be reused by another file: never send from it."""
    from types import SimpleNamespace

    from logstore.server.server import RegionShrunkError, _Connection

    path = tmp_path / "segment.log"
    path.write_bytes(b"x" * 100)
    fd = os.open(path, os.O_RDONLY)
    server = Server(store)
    left, right = socket.socketpair()
    try:
        connection = _Connection(left, "peer", "sendfile")
        closed_owner = SimpleNamespace(fd=-1)
        with pytest.raises(RegionShrunkError, match="closed"):
            server._sendfile_region(connection, SimpleNamespace(fd=fd, position=0, size=10, owner=closed_owner))
        with pytest.raises(RegionShrunkError, match="short"):  # the file ends before the region
            server._sendfile_region(connection, SimpleNamespace(fd=fd, position=90, size=20, owner=None))
        assert right.recv(100) == b"x" * 10  # what the file still had was sent, then the frame is abandoned
    finally:
        os.close(fd)
        left.close()
        right.close()


def test_producer_state_follows_truncation_and_topic_recreation_on_the_store(broker, store):
    """Done directly on the store, not through the server: a retried batch that truncation
    removed (or that belonged to a deleted topic) is written again, not acknowledged with an
    offset that no longer holds it."""
    store.create_topic("t")
    pid = init_producer_id(broker)
    first = batch(b"a", producer_id=pid, epoch=0, sequence=0)
    second = batch(b"b", b"c", producer_id=pid, epoch=0, sequence=1)
    assert produce(broker, "t", first, acks=-1) == (0, 0)
    assert produce(broker, "t", second, acks=-1) == (0, 1)
    assert produce(broker, "t", second, acks=-1) == (0, 1)  # a retry: not written again
    store.log("t", 0).truncate(1)  # the second batch is gone
    assert produce(broker, "t", second, acks=-1) == (0, 1)  # so its retry is written again
    assert store.log("t", 0).log_end_offset == 3
    assert [r.value for r in store.read("t", 0, offset=0)] == [b"a", b"b", b"c"]
    store.create_topic("u")  # (never truncated)
    assert produce(broker, "u", first, acks=-1) == (0, 0)
    assert produce(broker, "u", second, acks=-1) == (0, 1)
    store.delete_topic("u")
    store.create_topic("u")
    assert produce(broker, "u", first, acks=-1) == (0, 0)  # a new log: nothing to be a retry of
    assert produce(broker, "u", second, acks=-1) == (0, 1)
    assert store.log("u", 0).log_end_offset == 3
