"""Consumer groups with real, unmodified clients against ``serve`` on 127.0.0.1.

kafka-python 3.x, confluent-kafka 2.x (librdkafka 2.1x) and Debian's kcat (librdkafka 2.0.2) each
consume a topic as a group, commit and stop; more records arrive; a new consumer of the group gets
exactly the new ones, also after the server (and store) restarted. A mixed group (confluent-kafka
in this process, kafka-python in a child process) splits two partitions, rebalances when a member
leaves and when one dies (killed: the session timeout evicts it), loses no record and never hands
one record to two members of the same generation. Two groups on one topic each get every record.

Records are appended to the store directly (``server.notify_appended()`` wakes long polls): the
subject here is the group protocol, Produce has its own tests. Every wait is bounded; the server
runs with Kafka's rules but no initial rebalance delay and a 1 s minimum session timeout, so the
whole module stays well under two minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from logstore.server import serve
from logstore.server.groups import STABLE, GroupConfig
from logstore.store import LogStore

kafka = pytest.importorskip("kafka", reason="kafka-python is not installed")
from kafka import KafkaConsumer  # noqa: E402
from kafka.protocol.consumer.metadata import ConsumerProtocolAssignment  # noqa: E402

try:
    import confluent_kafka
except ImportError:  # pragma: no cover - CI installs it
    confluent_kafka = None

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
CLIENTS = ["kafka-python", "confluent", "kcat"]
DEADLINE_S = 30.0
QUIET_S = 1.0  # after the expected records, a consumer polls this long to show nothing else comes
GROUP_CONFIG = GroupConfig(min_session_timeout_ms=1000, initial_rebalance_delay_ms=0)


def require(client):
    if client == "confluent" and confluent_kafka is None:
        pytest.skip("confluent-kafka is not installed (pip install confluent-kafka)")
    if client == "kcat" and KCAT is None:
        pytest.skip("kcat is not installed (apt-get install kcat)")


class Node:
    """A store and its server on a data directory; ``restart()`` stops both and opens them again."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.store = None
        self.server = None
        self.start()

    def start(self):
        self.store = LogStore(self.data_dir)
        self.server = serve(self.store, port=0, fetch_poll_s=0.05, group_config=GROUP_CONFIG)

    def stop(self):
        self.server.close()
        self.store.close()

    def restart(self):
        self.stop()
        self.start()

    @property
    def bootstrap(self):
        return self.server.bootstrap_servers

    def append(self, topic, values, partition):
        self.store.append(topic, values, keys=[v + b"-key" for v in values], partition=partition)
        self.server.notify_appended()

    def group(self, group):
        return self.server.broker.groups.describe(group)


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path / "data")
    yield n
    n.stop()


def wait_until(predicate, what, timeout_s=DEADLINE_S):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def assignment_of(description):
    """{member_id: sorted partitions} of a stable group, decoded from the leader's assignment."""
    return {
        m.member_id: sorted(p.partition for p in ConsumerProtocolAssignment.decode(m.assignment).partitions())
        for m in description.members
    }


# --- one consumer of a group: consume, commit, stop; a new one resumes -------------------------------


def consume_group(client, bootstrap, group, topic, expected):
    """Consume ``topic`` as ``group`` until ``expected`` records came (then ``QUIET_S`` more to
    see that nothing else does), commit, stop. Returns the values received."""
    require(client)
    if client == "kafka-python":
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
        )
        values = []
        try:
            deadline = time.monotonic() + DEADLINE_S
            quiet_until = None
            while time.monotonic() < deadline and (quiet_until is None or time.monotonic() < quiet_until):
                for records in consumer.poll(timeout_ms=200).values():
                    values.extend(r.value for r in records)
                if len(values) >= expected and quiet_until is None:
                    quiet_until = time.monotonic() + QUIET_S
            consumer.commit()
        finally:
            consumer.close()
        return values
    if client == "confluent":
        consumer = confluent_kafka.Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 500,
            }
        )
        values = []
        try:
            consumer.subscribe([topic])
            deadline = time.monotonic() + DEADLINE_S
            quiet_until = None
            while time.monotonic() < deadline and (quiet_until is None or time.monotonic() < quiet_until):
                message = consumer.poll(0.2)
                if message is not None and message.error() is None:
                    values.append(message.value())
                if len(values) >= expected and quiet_until is None:
                    quiet_until = time.monotonic() + QUIET_S
            if values:
                consumer.commit(asynchronous=False)
        finally:
            consumer.close()
        return values
    # kcat -G: the balanced consumer; -e stops at the end of every assigned partition; offsets
    # are auto-committed (librdkafka's default), finally when kcat closes the consumer
    result = subprocess.run(
        [KCAT, "-b", bootstrap, "-G", group, topic, "-X", "auto.offset.reset=earliest", "-e", "-q",
         "-f", "%s\n"],
        capture_output=True,
        timeout=DEADLINE_S,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.splitlines()


@pytest.mark.parametrize("client", CLIENTS)
def test_a_group_resumes_from_its_commit_also_after_a_server_restart(node, client):
    require(client)
    topic, group = f"resume-{client}", f"group-{client}"
    node.store.create_topic(topic, 2)
    first = [b"a%d" % i for i in range(12)]
    node.append(topic, first[:6], 0)
    node.append(topic, first[6:], 1)
    assert sorted(consume_group(client, node.bootstrap, group, topic, 12)) == sorted(first)
    assert {k: v.offset for k, v in node.store.fetch_offsets(group).items()} == {(topic, 0): 6, (topic, 1): 6}

    more = [b"b%d" % i for i in range(5)]
    node.append(topic, more[:2], 0)
    node.append(topic, more[2:], 1)
    assert sorted(consume_group(client, node.bootstrap, group, topic, 5)) == sorted(more)

    node.restart()  # group state is gone; the committed offsets come back from __consumer_offsets
    last = [b"c%d" % i for i in range(3)]
    node.append(topic, last[:1], 0)
    node.append(topic, last[1:], 1)
    assert sorted(consume_group(client, node.bootstrap, group, topic, 3)) == sorted(last)
    assert {k: v.offset for k, v in node.store.fetch_offsets(group).items()} == {(topic, 0): 9, (topic, 1): 11}


def test_two_groups_on_one_topic_each_get_every_record(node):
    require("confluent")
    node.store.create_topic("shared", 2)
    values = [b"s%d" % i for i in range(20)]
    node.append("shared", values[:10], 0)
    node.append("shared", values[10:], 1)
    results = {}
    threads = [
        threading.Thread(target=lambda: results.setdefault("one", consume_group("kafka-python", node.bootstrap, "one", "shared", 20))),
        threading.Thread(target=lambda: results.setdefault("two", consume_group("confluent", node.bootstrap, "two", "shared", 20))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_S + 10)
    assert sorted(results["one"]) == sorted(values)
    assert sorted(results["two"]) == sorted(values)
    for group in ("one", "two"):
        assert {k: v.offset for k, v in node.store.fetch_offsets(group).items()} == {("shared", 0): 10, ("shared", 1): 10}


# --- a mixed group: confluent-kafka here, kafka-python in a child process ---------------------------

# The kafka-python member. Prints one JSON line per event; "stop" on stdin makes it commit, leave
# the group and exit; SIGKILL is its death. Every record is committed right after it is received.
KAFKA_PYTHON_MEMBER = textwrap.dedent(
    """
    import json, sys, threading
    from kafka import KafkaConsumer
    bootstrap, group, topic = sys.argv[1:4]
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    def say(**event):
        print(json.dumps(event), flush=True)
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, client_id="kp-member",
                             enable_auto_commit=False, auto_offset_reset="earliest", session_timeout_ms=3000,
                             heartbeat_interval_ms=300, max_poll_interval_ms=30000,
                             partition_assignment_strategy=[__import__("kafka").coordinator.assignors.range.RangePartitionAssignor])
    while not stop.is_set():
        batches = consumer.poll(timeout_ms=100)
        generation = consumer.group_metadata().generation_id
        for tp, records in batches.items():
            for r in records:
                say(event="record", gen=generation, p=tp.partition, o=r.offset, v=r.value.decode())
        if batches:
            try:
                consumer.commit()
                say(event="committed")
            except Exception as e:
                say(event="commit_failed", error=repr(e))
    consumer.close()
    say(event="closed")
    """
)


class KafkaPythonMember:
    def __init__(self, bootstrap, group, topic, script_path):
        self.events = []
        self.process = subprocess.Popen(
            [sys.executable, script_path, bootstrap, group, topic],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                pass

    def records(self):
        return [(e["gen"], e["p"], e["o"], e["v"]) for e in list(self.events) if e["event"] == "record"]

    def leave(self):
        self.process.stdin.write("stop\n")
        self.process.stdin.flush()
        self.process.wait(DEADLINE_S)
        self._reader.join(5)
        assert self.events[-1]["event"] == "closed", self.events[-3:]

    def kill(self):
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(DEADLINE_S)
        self._reader.join(5)

    def ensure_stopped(self):
        if self.process.poll() is None:
            self.kill()


class ConfluentMember:
    """A confluent-kafka consumer polling in a thread; each record is tagged with the generation
    its assignment came from (read from the coordinator when the assignment arrives)."""

    def __init__(self, node, group, topic):
        self.records = []
        self.generation = None
        self._stop = threading.Event()
        self._node = node
        self._group = group
        self.consumer = confluent_kafka.Consumer(
            {
                "bootstrap.servers": node.bootstrap,
                "group.id": group,
                "client.id": "confluent-member",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 300,
                "max.poll.interval.ms": 30000,
                "partition.assignment.strategy": "range",
            }
        )
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _on_assign(self, consumer, partitions):
        description = self._node.group(self._group)
        self.generation = description.generation_id if description is not None else None

    def _on_revoke(self, consumer, partitions):
        self.generation = None

    def _run(self):
        while not self._stop.is_set():
            message = self.consumer.poll(0.1)
            if message is None or message.error() is not None:
                continue
            self.records.append((self.generation, message.partition(), message.offset(), message.value().decode()))
            try:
                self.consumer.commit(message=message, asynchronous=False)
            except confluent_kafka.KafkaException:
                pass  # a commit refused during a rebalance: the record may come again, next generation
        self.consumer.close()

    def stop(self):
        self._stop.set()
        self._thread.join(DEADLINE_S)


def settled(node, group, member_count, partitions):
    """Is ``group`` stable with ``member_count`` members that own ``partitions`` between them?"""
    description = node.group(group)
    if description is None or description.state != STABLE or len(description.members) != member_count:
        return False
    return sorted(p for ps in assignment_of(description).values() for p in ps) == list(range(partitions))


def delivered(confluent, members):
    return {v for _g, _p, _o, v in confluent.records} | {v for k in members for _g, _p, _o, v in k.records()}


def assert_no_record_shared_within_a_generation(confluent, members):
    """No record delivered to two members of the same generation (duplicates across
    generations are at-least-once redelivery after a member left or died before its commit)."""
    receivers: dict[tuple[int, str], set[str]] = {}
    for name, records in [("confluent", confluent.records)] + [(f"kp{i}", m.records()) for i, m in enumerate(members)]:
        for generation, _p, _o, value in records:
            assert generation is not None
            receivers.setdefault((generation, value), set()).add(name)
    shared = {key: names for key, names in receivers.items() if len(names) > 1}
    assert not shared, shared


def test_mixed_group_splits_partitions_and_rebalances_on_leave_and_death(node, tmp_path):
    require("confluent")
    topic, group = "mixed", "mixed-group"
    node.store.create_topic(topic, 2)
    script = tmp_path / "kafka_python_member.py"
    script.write_text(KAFKA_PYTHON_MEMBER)
    produced = []
    counter = iter(range(1_000_000))

    def produce(per_partition):
        for partition in (0, 1):
            values = [f"p{partition}-{next(counter)}" for _ in range(per_partition)]
            node.append(topic, [v.encode() for v in values], partition)
            produced.extend(values)

    def all_delivered():
        return delivered(confluent, members) == set(produced)

    produce(10)
    confluent = ConfluentMember(node, group, topic)
    members: list[KafkaPythonMember] = []
    assignments = []
    try:
        wait_until(lambda: settled(node, group, 1, 2) and all_delivered(), "the confluent member alone")
        assignments.append(assignment_of(node.group(group)))

        members.append(KafkaPythonMember(node.bootstrap, group, topic, str(script)))
        wait_until(lambda: settled(node, group, 2, 2), "a two-member generation")
        split = assignment_of(node.group(group))
        assert sorted(split.values()) == [[0], [1]], split  # one partition each
        assignments.append(split)
        produce(10)
        wait_until(all_delivered, "both members to consume their partition")
        assert {p for _g, p, _o, v in members[0].records() if v in produced[-20:]} in ({0}, {1})

        members[0].leave()  # LeaveGroup (kafka-python sends the v3 batch form)
        wait_until(lambda: settled(node, group, 1, 2), "the rebalance after the leave")
        assignments.append(assignment_of(node.group(group)))
        produce(5)
        wait_until(all_delivered, "the remaining member to take over")

        members.append(KafkaPythonMember(node.bootstrap, group, topic, str(script)))
        wait_until(lambda: settled(node, group, 2, 2), "the kafka-python member to join again")
        assignments.append(assignment_of(node.group(group)))
        produce(5)
        wait_until(all_delivered, "both members to consume again")

        members[1].kill()  # no LeaveGroup: only the session timeout (3 s) notices
        wait_until(lambda: settled(node, group, 1, 2), "the session timeout to evict the dead member")
        assignments.append(assignment_of(node.group(group)))
        produce(5)
        wait_until(all_delivered, "the survivor to take over the dead member's partition")
    finally:
        confluent.stop()
        for member in members:
            member.ensure_stopped()

    assert delivered(confluent, members) == set(produced)  # no record lost
    for assignment in assignments:  # each generation gives each partition to exactly one member
        assert sorted(p for ps in assignment.values() for p in ps) == [0, 1], assignment
    assert_no_record_shared_within_a_generation(confluent, members)
    committed = {k: v.offset for k, v in node.store.fetch_offsets(group).items()}
    per_partition = {p: sum(v.startswith(f"p{p}-") for v in produced) for p in (0, 1)}
    assert per_partition == {0: 35, 1: 35}
    assert committed == {(topic, p): n for p, n in per_partition.items()}


@pytest.mark.slow
def test_group_churn_while_records_keep_coming(node, tmp_path):
    """Four rounds of two kafka-python members joining a confluent one, then leaving or dying,
    on four partitions, while a thread appends a record every 10 ms."""
    require("confluent")
    topic, group, partitions = "churn", "churn-group", 4
    node.store.create_topic(topic, partitions)
    script = tmp_path / "kafka_python_member.py"
    script.write_text(KAFKA_PYTHON_MEMBER)
    produced: list[str] = []
    stop = threading.Event()

    def producer():
        i = 0
        while not stop.wait(0.01):
            value = f"p{i % partitions}-{i}"
            node.append(topic, [value.encode()], i % partitions)
            produced.append(value)
            i += 1

    confluent = ConfluentMember(node, group, topic)
    members: list[KafkaPythonMember] = []
    feeder = threading.Thread(target=producer, daemon=True)
    feeder.start()
    try:
        wait_until(lambda: settled(node, group, 1, partitions), "the confluent member alone")
        for round_ in range(4):
            pair = [KafkaPythonMember(node.bootstrap, group, topic, str(script)) for _ in range(2)]
            members.extend(pair)
            wait_until(lambda: settled(node, group, 3, partitions), f"three members (round {round_})")
            so_far = set(produced)
            wait_until(lambda so_far=so_far: so_far <= delivered(confluent, members), "the members to catch up")
            if round_ % 2:
                pair[0].kill()
                pair[1].leave()
            else:
                pair[0].leave()
                pair[1].leave()
            wait_until(lambda: settled(node, group, 1, partitions), f"one member again (round {round_})")
        stop.set()
        feeder.join(10)
        wait_until(lambda: delivered(confluent, members) == set(produced), "every record to be delivered")
    finally:
        stop.set()
        confluent.stop()
        for member in members:
            member.ensure_stopped()
    assert delivered(confluent, members) == set(produced)
    assert_no_record_shared_within_a_generation(confluent, members)
