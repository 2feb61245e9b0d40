"""End-to-end tests with real, unmodified Kafka clients against ``serve`` on 127.0.0.1.

kafka-python 3.x (pure Python), confluent-kafka 2.x (pip wheel, bundled librdkafka 2.1x) and
Debian's kcat (librdkafka 2.0.2, the old feature-gate rules). Each client produces with acks=1
and acks=all, idempotence off and on, codecs none/zstd/lz4/gzip; the stored segment files are
then checked with kafka-python's own record reader. Every client reads what every client wrote
(from the beginning, from an offset, from a timestamp), wakes from a long poll on a new record,
receives a batch larger than its partition fetch limit, and reads across segment boundaries.

One server (and store) serves the whole module; each test uses its own topics. Every client call
is bounded in time (subprocess timeouts, poll deadlines), and the server is stopped at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time

import pytest

from logstore.config import LogConfig
from logstore.server import serve
from logstore.store import LogStore

kafka = pytest.importorskip("kafka", reason="kafka-python is not installed")
from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from kafka.record.memory_records import MemoryRecords  # noqa: E402

try:
    import confluent_kafka
except ImportError:  # pragma: no cover - CI installs it
    confluent_kafka = None

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
CLIENTS = ["kafka-python", "confluent", "kcat"]
CODECS = {"none": 0, "gzip": 1, "lz4": 3, "zstd": 4}
DEADLINE_S = 20.0
N = 20


def require(client):
    if client == "confluent" and confluent_kafka is None:
        pytest.skip("confluent-kafka is not installed (pip install confluent-kafka)")
    if client == "kcat" and KCAT is None:
        pytest.skip("kcat is not installed (apt-get install kcat)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # flush_ms is long so acks=all is what makes a batch durable, not the background flusher
    store = LogStore(tmp_path_factory.mktemp("clients") / "data", default_config=LogConfig(flush_ms=60_000))
    with serve(store, port=0, fetch_poll_s=0.05) as s:
        yield s
    store.close()


@pytest.fixture(scope="module")
def store(server):
    return server.store


# --- what each client produces and how it is read back ------------------------------------------


def expected_records(client, n=N, value_size=40):
    """(key, value, headers) the ``client`` producer writes; kcat can only send one header set."""
    out = []
    for i in range(n):
        key = f"{client}-k{i}".encode()
        value = (f"{client} value {i} " * value_size)[:value_size * 2].encode()
        headers = [("src", client.encode())] + ([] if client == "kcat" else [("n", str(i).encode())])
        out.append((key, value, headers))
    return out


def produce(client, bootstrap, topic, records, *, acks="1", idempotent=False, codec="none", timestamps=None):
    """Produce ``records`` in order; returns the offsets the client was told (None for kcat)."""
    require(client)
    if client == "kafka-python":
        producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            acks=1 if acks == "1" else "all",
            enable_idempotence=idempotent,
            compression_type=None if codec == "none" else codec,
            linger_ms=20,
            request_timeout_ms=10_000,
        )
        try:
            futures = [
                producer.send(topic, key=k, value=v, headers=h, partition=0,
                              timestamp_ms=None if timestamps is None else timestamps[i])
                for i, (k, v, h) in enumerate(records)
            ]
            producer.flush(DEADLINE_S)
            return [f.get(timeout=DEADLINE_S).offset for f in futures]
        finally:
            producer.close(timeout=5)
    if client == "confluent":
        producer = confluent_kafka.Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": acks,
                "enable.idempotence": idempotent,
                "compression.type": codec,
                "linger.ms": 20,
                "message.timeout.ms": int(DEADLINE_S * 1000),
            }
        )
        offsets = {}

        def delivered(error, message, i):
            assert error is None, error
            offsets[i] = message.offset()

        for i, (k, v, h) in enumerate(records):
            producer.produce(topic, key=k, value=v, headers=h, partition=0,
                             timestamp=0 if timestamps is None else timestamps[i],
                             on_delivery=lambda e, m, i=i: delivered(e, m, i))
        assert producer.flush(DEADLINE_S) == 0
        return [offsets[i] for i in range(len(records))]
    # kcat: line mode from stdin, "key:value", one header set for every message
    assert timestamps is None
    headers = {h for _k, _v, hs in records for h in hs}
    args = [KCAT, "-b", bootstrap, "-P", "-t", topic, "-p", "0", "-K", ":", "-z", codec]
    for name, value in sorted(headers):
        args += ["-H", f"{name}={value.decode()}"]
    args += ["-X", "enable.idempotence=true"] if idempotent else ["-X", f"acks={acks}"]
    stdin = b"".join(k + b":" + v + b"\n" for k, v, _h in records)
    result = subprocess.run(args, input=stdin, capture_output=True, timeout=DEADLINE_S)
    assert result.returncode == 0, result.stderr.decode()
    return None


def consume(client, bootstrap, topic, count, *, start="beginning", max_partition_fetch_bytes=None,
            fetch_wait_ms=None, deadline_s=DEADLINE_S):
    """Up to ``count`` records of partition 0 as (offset, key, value, headers), by manual
    assignment. ``start`` is "beginning", an offset, or ("timestamp", ms)."""
    require(client)
    deadline = time.monotonic() + deadline_s
    if client == "kafka-python":
        options = {}
        if max_partition_fetch_bytes:
            options["max_partition_fetch_bytes"] = max_partition_fetch_bytes
        if fetch_wait_ms:
            options["fetch_max_wait_ms"] = fetch_wait_ms
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **options)
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            if start == "beginning":
                consumer.seek_to_beginning(tp)
            elif isinstance(start, tuple):
                found = consumer.offsets_for_times({tp: start[1]})[tp]
                consumer.seek(tp, found.offset)
            else:
                consumer.seek(tp, start)
            out = []
            while len(out) < count and time.monotonic() < deadline:
                for batch in consumer.poll(timeout_ms=200).values():
                    out += [(r.offset, r.key, r.value, [(k, v) for k, v in r.headers]) for r in batch]
            return out[:count]
        finally:
            consumer.close()
    if client == "confluent":
        options = {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False}
        if max_partition_fetch_bytes:
            options["max.partition.fetch.bytes"] = max_partition_fetch_bytes
        if fetch_wait_ms:
            options["fetch.wait.max.ms"] = fetch_wait_ms
        consumer = confluent_kafka.Consumer(options)
        try:
            if start == "beginning":
                offset = confluent_kafka.OFFSET_BEGINNING
            elif isinstance(start, tuple):
                found = consumer.offsets_for_times([confluent_kafka.TopicPartition(topic, 0, start[1])], timeout=10)
                offset = found[0].offset
            else:
                offset = start
            consumer.assign([confluent_kafka.TopicPartition(topic, 0, offset)])
            out = []
            while len(out) < count and time.monotonic() < deadline:
                message = consumer.poll(0.2)
                if message is None:
                    continue
                assert message.error() is None, message.error()
                out.append((message.offset(), message.key(), message.value(), list(message.headers() or [])))
            return out
        finally:
            consumer.close()
    if start == "beginning":
        offset = "beginning"
    elif isinstance(start, tuple):
        offset = f"s@{start[1]}"
    else:
        offset = str(start)
    args = [KCAT, "-b", bootstrap, "-C", "-t", topic, "-p", "0", "-o", offset, "-c", str(count),
            "-f", "%o|%k|%s|%h\\n"]
    if max_partition_fetch_bytes:
        args += ["-X", f"max.partition.fetch.bytes={max_partition_fetch_bytes}"]
    if fetch_wait_ms:
        args += ["-X", f"fetch.wait.max.ms={fetch_wait_ms}"]
    result = subprocess.run(args, capture_output=True, timeout=deadline_s)
    assert result.returncode == 0, result.stderr.decode()
    return [_parse_kcat_line(line) for line in result.stdout.splitlines()]


def _parse_kcat_line(line: bytes):
    offset, key, value, headers = line.split(b"|")
    pairs = []
    if headers:
        for pair in headers.split(b","):
            name, _, value_ = pair.partition(b"=")
            pairs.append((name.decode(), value_))
    return int(offset), key, value, pairs


def stored_batches(store, topic):
    """Every batch of partition 0, read from the segment files by kafka-python's reader."""
    directory = os.path.join(store.data_dir, f"{topic}-0")
    batches = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".log"):
            with open(os.path.join(directory, name), "rb") as f:
                records = MemoryRecords(f.read())
            while (batch := records.next_batch()) is not None:
                batches.append(batch)
    return batches


def as_expected(records, first_offset=0):
    return [(first_offset + i, k, v, h) for i, (k, v, h) in enumerate(records)]


# --- produce matrix -----------------------------------------------------------------------------


MODES = {"acks1": dict(acks="1", idempotent=False), "acksall-idempotent": dict(acks="all", idempotent=True)}


@pytest.mark.parametrize("codec", list(CODECS))
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("client", CLIENTS)
def test_produce(server, store, client, mode, codec):
    topic = f"produce-{client}-{mode}-{codec}"
    records = expected_records(client)
    offsets = produce(client, server.bootstrap_servers, topic, records, codec=codec, **MODES[mode])
    if offsets is not None:
        assert offsets == list(range(N))
    log = store.log(topic, 0)
    assert log.log_end_offset == N
    if MODES[mode]["acks"] == "all":
        assert log.durable_offset == N  # acks=all answered only after the fsync
    stored = [(r.offset, r.key, r.value, list(r.headers)) for r in store.read(topic, 0, 0, max_bytes=1 << 20)]
    assert stored == as_expected(records)
    batches = stored_batches(store, topic)
    assert batches and sum(b.records_count for b in batches) == N
    for b in batches:
        assert b.validate_crc()
        assert b.compression_type == CODECS[codec]
        assert (b.producer_id >= 0) == MODES[mode]["idempotent"]
        if MODES[mode]["idempotent"]:
            assert b.producer_epoch == 0 and b.base_sequence >= 0


# --- every client reads what every client wrote --------------------------------------------------


@pytest.fixture(scope="module")
def cross_topics(server):
    """One topic per producing client, written with mixed settings; {topic: expected}."""
    settings = {
        "kafka-python": dict(acks="all", idempotent=True, codec="zstd"),
        "confluent": dict(acks="1", idempotent=False, codec="lz4"),
        "kcat": dict(acks="all", idempotent=True, codec="zstd"),
    }
    topics = {}
    for client, options in settings.items():
        if client == "confluent" and confluent_kafka is None or client == "kcat" and KCAT is None:
            continue
        records = expected_records(client)
        produce(client, server.bootstrap_servers, f"cross-{client}", records, **options)
        topics[f"cross-{client}"] = as_expected(records)
    return topics


@pytest.mark.parametrize("client", CLIENTS)
def test_every_client_reads_every_client_from_the_beginning(server, cross_topics, client):
    for topic, expected in cross_topics.items():
        assert consume(client, server.bootstrap_servers, topic, N) == expected, topic
    # (loopback: the default transport sends big regions from a map, small ones with sendfile)
    assert server.stats.bytes_sendfile + server.stats.bytes_mapped > 0 and server.stats.bytes_copied == 0


@pytest.mark.parametrize("client", CLIENTS)
def test_every_client_reads_from_an_offset(server, cross_topics, client):
    for topic, expected in cross_topics.items():
        assert consume(client, server.bootstrap_servers, topic, N - 7, start=7) == expected[7:], topic


@pytest.fixture(scope="module")
def timed_topic(server):
    base = int(time.time() * 1000) - 3_600_000
    timestamps = [base + 1000 * i for i in range(N)]
    records = expected_records("kafka-python")
    produce("kafka-python", server.bootstrap_servers, "timed", records, timestamps=timestamps)
    return base, as_expected(records)


@pytest.mark.parametrize("client", CLIENTS)
def test_every_client_reads_from_a_timestamp(server, timed_topic, client):
    base, expected = timed_topic
    got = consume(client, server.bootstrap_servers, "timed", N - 12, start=("timestamp", base + 11_500))
    assert got == expected[12:]


# --- long poll, large batches, segment boundaries ------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_long_poll_wakes_on_a_new_record(server, store, client):
    topic = f"poll-{client}"
    store.create_topic(topic)
    store.append(topic, [b"old"], partition=0)
    result = {}

    def wait_for_one():
        start = time.monotonic()
        result["records"] = consume(client, server.bootstrap_servers, topic, 1, start=1, fetch_wait_ms=10_000)
        result["at"] = time.monotonic()
        result["took"] = result["at"] - start

    thread = threading.Thread(target=wait_for_one)
    thread.start()
    time.sleep(1.5)  # the consumer is now parked in a long-poll Fetch
    assert thread.is_alive()
    sent_at = time.monotonic()
    produce("kafka-python" if client == "kcat" else client, server.bootstrap_servers, topic,
            [(b"new", b"wake up", [])])
    thread.join(DEADLINE_S)
    assert not thread.is_alive()
    assert [(o, v) for o, _k, v, _h in result["records"]] == [(1, b"wake up")]
    assert result["at"] - sent_at < 5  # well before the 10 s fetch wait


@pytest.mark.parametrize("client", CLIENTS)
def test_batch_larger_than_the_partition_fetch_limit_is_delivered(server, store, client):
    topic = f"large-{client}"
    big = [(b"big", os.urandom(300_000).hex()[:600_000].encode(), [])]
    produce("kafka-python", server.bootstrap_servers, topic, big + [(b"after", b"small", [])], codec="none")
    assert stored_batches(store, topic)[0].size_in_bytes > 600_000
    got = consume(client, server.bootstrap_servers, topic, 2, max_partition_fetch_bytes=65_536)
    assert [(o, k, v) for o, k, v, _h in got] == [(0, b"big", big[0][1]), (1, b"after", b"small")]


@pytest.fixture(scope="module")
def segmented_topic(server, store):
    """A topic created through CreateTopics with tiny segments, holding many batches."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=server.bootstrap_servers, request_timeout_ms=10_000)
    try:
        admin.create_topics([NewTopic("segmented", 1, 1, topic_configs={"segment.bytes": "4096"})])
    finally:
        admin.close()
    assert store.describe_topic("segmented").config.segment_bytes == 4096
    records = [(b"k%d" % i, os.urandom(150).hex().encode(), [("i", str(i).encode())]) for i in range(120)]
    for start in range(0, 120, 10):  # several produce requests, so several batches
        produce("kafka-python", server.bootstrap_servers, "segmented", records[start:start + 10])
    assert len(store.log("segmented", 0).segments) > 5
    return as_expected(records)


@pytest.mark.parametrize("client", CLIENTS)
def test_fetches_span_segment_boundaries(server, segmented_topic, client):
    got = consume(client, server.bootstrap_servers, "segmented", len(segmented_topic), max_partition_fetch_bytes=8192)
    assert got == segmented_topic


def test_confluent_admin_creates_topics_with_configs(server, store):
    require("confluent")
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": server.bootstrap_servers})
    futures = admin.create_topics(
        [NewTopic("admin-made", num_partitions=3, replication_factor=1,
                  config={"retention.ms": "3600000", "cleanup.policy": "compact"}),
         NewTopic("admin-bad", num_partitions=1, replication_factor=1, config={"no.such.config": "1"})],
        operation_timeout=10,
    )
    try:
        futures["admin-made"].result(timeout=DEADLINE_S)
        with pytest.raises(confluent_kafka.KafkaException) as error:
            futures["admin-bad"].result(timeout=DEADLINE_S)
    finally:
        del admin, futures  # AdminClient has no close(): the last reference destroys it
    assert error.value.args[0].code() == confluent_kafka.KafkaError.INVALID_CONFIG
    made = store.describe_topic("admin-made")
    assert (made.partitions, made.config.retention_ms, made.config.cleanup_policy) == (3, 3_600_000, "compact")
    assert "admin-bad" not in store.topics()


def test_kcat_lists_the_broker_and_topics(server, store):
    require("kcat")
    store.create_topic("listed", 2)
    result = subprocess.run([KCAT, "-b", server.bootstrap_servers, "-L"], capture_output=True, timeout=DEADLINE_S)
    assert result.returncode == 0
    out = result.stdout.decode()
    assert f"broker 0 at {server.bootstrap_servers}" in out and 'topic "listed" with 2 partitions' in out
