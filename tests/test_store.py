"""LogStore: topics and partitions in a data directory, the lock, the partitioner."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading

import pytest

from logstore import ConfigError, LogConfig, LogLockedError, TopicError
from logstore.store import LogStore, default_partition, murmur2


def open_store(path, **kwargs):
    kwargs.setdefault("background", False)
    return LogStore(path, **kwargs)


def snapshot(directory) -> dict:
    out = {}
    for root, _dirs, files in os.walk(directory):
        for name in files:
            if name == ".lock":
                continue
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = f.read()
    return out


def test_topic_config_survives_reopen(tmp_path):
    with open_store(tmp_path) as store:
        store.create_topic("events", 3, {"segment_bytes": 10_000, "durability": "append", "retention_ms": 60_000})
        store.create_topic("plain")
        assert store.topics() == ["events", "plain"]
        store.append("events", [b"a", b"b"], partition=2)
    assert sorted(os.listdir(tmp_path)) == sorted(
        [".lock", "logstore-topics.json", "events-0", "events-1", "events-2", "plain-0"]
    )
    with open_store(tmp_path) as store:
        description = store.describe_topic("events")
        assert description.partitions == 3
        assert description.config.segment_bytes == 10_000
        assert description.config.durability == "append"
        assert description.config.retention_ms == 60_000
        assert store.describe_topic("plain").config == LogConfig()
        assert [r.value for r in store.read("events", 2, 0)] == [b"a", b"b"]
        assert store.offsets("events") == {0: (0, 0, 0), 1: (0, 0, 0), 2: (0, 2, 2)}


@pytest.mark.parametrize(
    "name", ["", ".", "..", "a/b", "../escape", "x" * 250, "sp ace", "ümlaut", "a\0b", "tab\t"]
)
def test_bad_topic_names_are_refused_and_nothing_changes(tmp_path, name):
    with open_store(tmp_path) as store:
        store.create_topic("ok")
        before = snapshot(tmp_path)
        with pytest.raises(TopicError, match="invalid topic name"):
            store.create_topic(name)
        assert snapshot(tmp_path) == before
        assert store.topics() == ["ok"]


def test_longest_allowed_name_and_all_allowed_characters(tmp_path):
    with open_store(tmp_path) as store:
        store.create_topic("x" * 249)
        store.create_topic("A-z_0.9")
        assert store.topics() == ["A-z_0.9", "x" * 249]


@pytest.mark.parametrize(
    "partitions, config",
    [(0, None), (-1, None), ("2", None), (1, {"segment_bytes": 10}), (1, {"durability": "sometimes"}),
     (1, {"no_such_setting": 1}), (1, {"segment_bytes": 2**31})],
)
def test_bad_configs_are_refused_and_nothing_changes(tmp_path, partitions, config):
    with open_store(tmp_path) as store:
        before = snapshot(tmp_path)
        with pytest.raises(ConfigError):
            store.create_topic("t", partitions, config)
        assert snapshot(tmp_path) == before
        assert store.topics() == []


def test_existing_and_missing_topics(tmp_path):
    with open_store(tmp_path) as store:
        store.create_topic("t", 2)
        with pytest.raises(TopicError, match="already exists"):
            store.create_topic("t")
        with pytest.raises(TopicError, match="does not exist"):
            store.append("nope", [b"x"])
        with pytest.raises(TopicError, match="partitions 0..1"):
            store.log("t", 2)


def test_second_opener_is_refused_naming_the_holder(tmp_path):
    with open_store(tmp_path) as store:
        store.create_topic("t")
        before = snapshot(tmp_path)
        with pytest.raises(LogLockedError, match=f"process {os.getpid()}"):
            open_store(tmp_path)
        # and from another process
        code = (
            "import sys\nfrom logstore.store import LogStore\nfrom logstore import LogLockedError\n"
            "try:\n    LogStore(sys.argv[1], background=False)\nexcept LogLockedError as e:\n"
            "    print(e); sys.exit(3)\n"
        )
        result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 3, result.stderr
        assert str(os.getpid()) in result.stdout
        assert snapshot(tmp_path) == before
    with open_store(tmp_path) as store:  # released at close
        assert store.topics() == ["t"]


def test_delete_topic_removes_data(tmp_path):
    with open_store(tmp_path) as store:
        store.create_topic("t", 2)
        store.append("t", [b"x"], partition=1)
        store.delete_topic("t")
        assert store.topics() == []
        assert not any(name.startswith("t-") for name in os.listdir(tmp_path))
        store.create_topic("t", 1)
        assert store.read("t", 0, 0) == []
    with open_store(tmp_path) as store:
        assert store.topics() == ["t"]


def test_half_finished_delete_is_finished_at_open(tmp_path):
    with open_store(tmp_path) as store:
        store.create_topic("t")
    os.rename(tmp_path / "t-0", tmp_path / "old-0.abc-delete")
    with open_store(tmp_path):
        assert not os.path.exists(tmp_path / "old-0.abc-delete")


def test_murmur2_matches_kafka_python_on_many_keys():
    from kafka.partitioner.default import murmur2 as kafka_murmur2

    rng = random.Random(1)
    for _ in range(10_000):
        key = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        # kafka-python gives the same 32 bits unsigned; Kafka's Java gives them signed, as we do
        assert murmur2(key) & 0xFFFFFFFF == kafka_murmur2(key), key
        assert -(2**31) <= murmur2(key) < 2**31
    # known values from Kafka's own tests (UtilsTest.testMurmur2)
    assert murmur2(b"21") == -973932308
    assert murmur2(b"foobar") == -790332482


def test_keyed_appends_go_where_kafka_would_send_them(tmp_path):
    from kafka.partitioner.default import murmur2 as kafka_murmur2

    rng = random.Random(2)
    keys = [b"key-%d" % rng.randrange(10**9) for _ in range(500)]
    with open_store(tmp_path) as store:
        store.create_topic("t", 7)
        results = store.append("t", [b"v"] * len(keys), keys=keys)
        assert sum(r.last_offset - r.base_offset + 1 for r in results) == 500
        for partition in range(7):
            for record in store.read("t", partition, 0, max_bytes=10**6):
                assert (kafka_murmur2(record.key) & 0x7FFFFFFF) % 7 == partition
                assert default_partition(record.key, 7) == partition


def test_keyless_appends_are_sticky_per_call(tmp_path):
    with open_store(tmp_path) as store:
        store.create_topic("t", 3)
        used = [store.append("t", [b"a", b"b", b"c"]) for _ in range(6)]
        assert all(len(r) == 1 and r[0].last_offset - r[0].base_offset == 2 for r in used)
        assert {r[0].partition for r in used} == {0, 1, 2}


def test_writers_to_different_partitions_run_concurrently(tmp_path):
    with open_store(tmp_path) as store:
        store.create_topic("t", 4, {"durability": "none"})
        def writer(p):
            for i in range(200):
                store.append("t", [b"%d-%d" % (p, i)], partition=p)
        threads = [threading.Thread(target=writer, args=(p,)) for p in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for p in range(4):
            assert [r.value for r in store.read("t", p, 0, max_bytes=10**6)] == [b"%d-%d" % (p, i) for i in range(200)]


def test_close_leaves_every_partition_clean(tmp_path):
    store = open_store(tmp_path, background=True)
    store.create_topic("t", 2)
    store.append("t", [b"x"], partition=0)
    store.close()
    store.close()
    for p in range(2):
        assert os.path.exists(tmp_path / f"t-{p}" / ".clean_shutdown")
    with open_store(tmp_path) as store:
        assert all(log.was_clean_shutdown for _t, _p, log in store.logs())


def test_background_thread_rolls_idle_partitions_and_flushes(tmp_path):
    import time

    config = {"segment_ms": 50, "durability": "interval", "flush_ms": 50}
    with LogStore(tmp_path, background=True) as store:
        store.create_topic("t", 1, config)
        store.append("t", [b"x"], partition=0)
        log = store.log("t", 0)
        assert log.durable_offset == 0
        deadline = time.monotonic() + 10
        while (len(log.segments) < 2 or log.durable_offset < 1) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(log.segments) == 2  # rolled with no append: the timer did it
        assert log.durable_offset == 1  # fsynced by the interval flush, not by an append
    assert not any(t.name == "logstore-background" for t in threading.enumerate())


def test_cleaner_thread_compacts_compacted_topics(tmp_path):
    import time

    config = {"cleanup_policy": "compact", "segment_bytes": 2048, "durability": "none"}
    with LogStore(tmp_path, background=True, cleaner_backoff_ms=50, cleaner_memory_budget_bytes=4 << 20) as store:
        store.create_topic("c", 1, config)
        for i in range(300):
            store.append("c", [b"v%d" % i], keys=[b"k%d" % (i % 5)], partition=0)
        log = store.log("c", 0)
        before = log.size_bytes
        deadline = time.monotonic() + 20
        while store.cleaner_stats.passes == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.cleaner_stats.passes >= 1
        assert log.size_bytes < before
        latest = {}
        offset = log.log_start_offset
        while offset < log.log_end_offset:
            records = log.read(offset, max_bytes=10**6)
            for r in records:
                latest[r.key] = r.value
            offset = records[-1].offset + 1
        assert latest == {b"k%d" % k: b"v%d" % (295 + k) for k in range(5)}
    assert not any(t.name == "logstore-cleaner" for t in threading.enumerate())
