"""The group coordinator state machine, driven directly with a fake clock: no sockets, no sleeps.

A JoinGroup/SyncGroup returns a ``Pending``; the tests check ``done`` and ``result`` instead of
waiting, and move time by setting the clock and calling ``tick()``.
"""

from __future__ import annotations

import threading

import pytest
from kafka.protocol.consumer.group import (
    HeartbeatRequest,
    HeartbeatResponse,
    JoinGroupRequest,
    JoinGroupResponse,
    LeaveGroupRequest,
    LeaveGroupResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
    SyncGroupRequest,
    SyncGroupResponse,
)
from kafka.protocol.producer import ProduceRequest, ProduceResponse

from logstore.server.groups import (
    COMPLETING_REBALANCE,
    EMPTY,
    PREPARING_REBALANCE,
    STABLE,
    GroupConfig,
    GroupCoordinator,
)
from logstore.server.handlers import Broker
from logstore.server.protocol import decode_request, read_parts
from logstore.store import LogStore

NONE = 0
COORDINATOR_NOT_AVAILABLE = 15
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
INVALID_GROUP_ID = 24
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
REBALANCE_IN_PROGRESS = 27

SESSION_MS = 10_000
REBALANCE_MS = 30_000


class FakeClock:
    def __init__(self, now_ms: int = 1_000_000):
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def coordinator(clock):
    return GroupCoordinator(GroupConfig(initial_rebalance_delay_ms=0), clock_ms=clock)


def join(coordinator, member_id="", *, group="g", protocols=(("range", b"meta"),), session_ms=SESSION_MS,
         rebalance_ms=REBALANCE_MS, protocol_type="consumer", client_id="c"):
    return coordinator.join(
        group,
        member_id,
        protocol_type=protocol_type,
        protocols=list(protocols),
        session_timeout_ms=session_ms,
        rebalance_timeout_ms=rebalance_ms,
        client_id=client_id,
    )


def joined(pending):
    assert pending.done, "JoinGroup should have been answered"
    assert pending.result.error_code == NONE, pending.result
    return pending.result


def stable_group_of_two(coordinator):
    """Members a (leader) and b in a stable generation 2; returns (a, b)."""
    a = joined(join(coordinator, protocols=[("range", b"a-meta")]))
    sync = coordinator.sync("g", a.generation_id, a.member_id, {a.member_id: b"a0"})
    assert sync.result.error_code == NONE
    b_pending = join(coordinator, protocols=[("range", b"b-meta")])
    assert not b_pending.done  # the barrier waits for a to rejoin
    assert coordinator.heartbeat("g", a.generation_id, a.member_id) == REBALANCE_IN_PROGRESS
    a = joined(join(coordinator, a.member_id, protocols=[("range", b"a-meta")]))
    b = joined(b_pending)
    b_sync = coordinator.sync("g", b.generation_id, b.member_id, {})
    a_sync = coordinator.sync("g", a.generation_id, a.member_id, {a.member_id: b"A", b.member_id: b"B"})
    assert (a_sync.result, b_sync.result) == ((NONE, b"A"), (NONE, b"B"))
    return a, b


# --- joining, the barrier, syncing --------------------------------------------------------------


def test_a_lone_member_joins_leads_and_gets_its_assignment(coordinator):
    result = joined(join(coordinator, protocols=[("range", b"meta")], client_id="app"))
    assert result.generation_id == 1 and result.protocol_name == "range"
    assert result.leader_id == result.member_id and result.member_id.startswith("app-")
    assert result.members == ((result.member_id, b"meta"),)
    assert coordinator.describe("g").state == COMPLETING_REBALANCE
    sync = coordinator.sync("g", 1, result.member_id, {result.member_id: b"assignment"})
    assert sync.done and sync.result == (NONE, b"assignment")
    assert coordinator.describe("g").state == STABLE
    assert coordinator.heartbeat("g", 1, result.member_id) == NONE


def test_second_member_triggers_a_rebalance_and_the_follower_waits_for_the_leader(coordinator):
    a = joined(join(coordinator, protocols=[("range", b"a-meta")]))
    coordinator.sync("g", 1, a.member_id, {a.member_id: b"all"})
    b_pending = join(coordinator, protocols=[("range", b"b-meta")])
    assert not b_pending.done
    assert coordinator.describe("g").state == PREPARING_REBALANCE
    # a is told by its heartbeat, commits (allowed: same generation), then rejoins
    assert coordinator.heartbeat("g", 1, a.member_id) == REBALANCE_IN_PROGRESS
    assert coordinator.validate_commit("g", 1, a.member_id) == NONE
    a2 = joined(join(coordinator, a.member_id, protocols=[("range", b"a-meta")]))
    b = joined(b_pending)
    assert a2.generation_id == b.generation_id == 2
    assert a2.leader_id == b.leader_id == a.member_id  # the leader stays the leader
    assert dict(a2.members) == {a.member_id: b"a-meta", b.member_id: b"b-meta"}
    assert b.members == ()  # only the leader sees the members
    follower = coordinator.sync("g", 2, b.member_id, {b.member_id: b"ignored: not the leader"})
    assert not follower.done
    assert coordinator.validate_commit("g", 2, b.member_id) == REBALANCE_IN_PROGRESS  # no assignment yet
    leader = coordinator.sync("g", 2, a.member_id, {a.member_id: b"p0", b.member_id: b"p1"})
    assert leader.result == (NONE, b"p0") and follower.result == (NONE, b"p1")
    assert coordinator.describe("g").state == STABLE
    # a late SyncGroup in the stable generation gets the same assignment again
    assert coordinator.sync("g", 2, b.member_id, {}).result == (NONE, b"p1")


def test_initial_rebalance_delay_gathers_members_started_together(clock):
    coordinator = GroupCoordinator(GroupConfig(initial_rebalance_delay_ms=3000), clock_ms=clock)
    first = join(coordinator)
    clock.advance(2000)
    coordinator.tick()
    assert not first.done
    second = join(coordinator)  # extends the delay to 3 s from now
    clock.advance(2000)
    coordinator.tick()
    assert not first.done and not second.done
    clock.advance(1000)
    coordinator.tick()
    assert joined(first).generation_id == joined(second).generation_id == 1
    assert len(joined(first).members) == 2


def test_members_that_do_not_rejoin_by_the_rebalance_timeout_are_removed(coordinator, clock):
    a, b = stable_group_of_two(coordinator)
    c_pending = join(coordinator, rebalance_ms=REBALANCE_MS)
    b2 = join(coordinator, b.member_id)
    for _ in range(REBALANCE_MS // 1000 - 1):
        clock.advance(1000)
        assert coordinator.heartbeat("g", a.generation_id, a.member_id) == REBALANCE_IN_PROGRESS  # alive, not rejoining
        assert not c_pending.done
    clock.advance(1000)
    coordinator.tick()
    c, b2 = joined(c_pending), joined(b2)
    assert c.generation_id == 3
    assert {m.member_id for m in coordinator.describe("g").members} == {b.member_id, c.member_id}
    assert b2.leader_id == b.member_id  # the old leader is gone: the first remaining member leads
    assert coordinator.heartbeat("g", 3, a.member_id) == UNKNOWN_MEMBER_ID


def test_a_silent_member_is_evicted_after_its_session_timeout(coordinator, clock):
    a, b = stable_group_of_two(coordinator)
    for _ in range(SESSION_MS // 1000 - 1):
        clock.advance(1000)
        assert coordinator.heartbeat("g", 2, a.member_id) == NONE  # b says nothing
    clock.advance(1000)
    assert coordinator.heartbeat("g", 2, a.member_id) == REBALANCE_IN_PROGRESS
    assert coordinator.heartbeat("g", 2, b.member_id) == UNKNOWN_MEMBER_ID
    assert coordinator.validate_commit("g", 2, b.member_id) == UNKNOWN_MEMBER_ID
    a3 = joined(join(coordinator, a.member_id))
    assert a3.generation_id == 3 and [m for m, _ in a3.members] == [a.member_id]


def test_members_waiting_in_join_or_sync_are_not_evicted(coordinator, clock):
    a, b = stable_group_of_two(coordinator)
    b_join = join(coordinator, b.member_id, protocols=[("range", b"new-meta")])  # changed: rebalance
    for _ in range(SESSION_MS * 3 // 2000):  # b waits in JoinGroup 1.5 sessions: still a member
        clock.advance(1000)
        assert coordinator.heartbeat("g", 2, a.member_id) == REBALANCE_IN_PROGRESS
    a_join = join(coordinator, a.member_id)
    assert joined(a_join).generation_id == joined(b_join).generation_id == 3
    b_sync = coordinator.sync("g", 3, b.member_id, {})
    clock.advance(SESSION_MS * 2)  # a (the leader) went silent before its SyncGroup: evicted
    coordinator.tick()
    assert b_sync.result.error_code == REBALANCE_IN_PROGRESS
    b4 = joined(join(coordinator, b.member_id))
    assert b4.generation_id == 4 and b4.leader_id == b.member_id


# --- rejoining ----------------------------------------------------------------------------------


def test_a_follower_checking_in_with_the_same_metadata_keeps_the_generation(coordinator):
    a, b = stable_group_of_two(coordinator)
    again = joined(join(coordinator, b.member_id, protocols=[("range", b"b-meta")]))
    assert again.generation_id == 2 and coordinator.describe("g").state == STABLE


def test_a_rejoining_leader_or_changed_metadata_starts_a_rebalance(coordinator):
    a, b = stable_group_of_two(coordinator)
    a_join = join(coordinator, a.member_id, protocols=[("range", b"a-meta")])
    assert not a_join.done and coordinator.describe("g").state == PREPARING_REBALANCE
    assert coordinator.heartbeat("g", 2, b.member_id) == REBALANCE_IN_PROGRESS
    b_join = join(coordinator, b.member_id, protocols=[("range", b"b-meta-2")])
    assert joined(a_join).generation_id == 3
    assert dict(joined(a_join).members)[b.member_id] == b"b-meta-2"
    assert joined(b_join).generation_id == 3


def test_a_member_that_lost_its_join_answer_gets_it_again(coordinator):
    a = joined(join(coordinator))
    again = joined(join(coordinator, a.member_id))
    assert again == a


def test_protocol_common_to_all_members_wins_by_preference_votes(clock):
    coordinator = GroupCoordinator(GroupConfig(initial_rebalance_delay_ms=1000), clock_ms=clock)
    first = join(coordinator, protocols=[("range", b"1"), ("roundrobin", b"1"), ("sticky", b"1")])
    second = join(coordinator, protocols=[("roundrobin", b"2"), ("range", b"2")])
    third = join(coordinator, protocols=[("sticky", b"3"), ("roundrobin", b"3")])
    clock.advance(1000)
    coordinator.tick()
    # only roundrobin is supported by all three, whatever each prefers
    assert {joined(p).protocol_name for p in (first, second, third)} == {"roundrobin"}
    leader = next(joined(p) for p in (first, second, third) if joined(p).members)
    assert sorted(metadata for _m, metadata in leader.members) == [b"1", b"2", b"3"]


def test_most_preferred_common_protocol_wins():
    clock = FakeClock()
    coordinator = GroupCoordinator(GroupConfig(initial_rebalance_delay_ms=1000), clock_ms=clock)
    pendings = [
        join(coordinator, protocols=[("range", b""), ("roundrobin", b"")]),
        join(coordinator, protocols=[("roundrobin", b""), ("range", b"")]),
        join(coordinator, protocols=[("roundrobin", b""), ("range", b"")]),
    ]
    clock.advance(1000)
    coordinator.tick()
    assert {joined(p).protocol_name for p in pendings} == {"roundrobin"}


# --- leaving ------------------------------------------------------------------------------------


def test_leave_group_in_a_batch_rebalances_the_rest(coordinator):
    a, b = stable_group_of_two(coordinator)
    c_pending = join(coordinator)
    a2, b2 = join(coordinator, a.member_id), join(coordinator, b.member_id)
    c = joined(c_pending)
    assert c.generation_id == 3
    for _pending, member in ((a2, a), (b2, b)):
        coordinator.sync("g", 3, member.member_id, {})
    assert coordinator.describe("g").state == STABLE
    assert coordinator.leave("g", [a.member_id, "nobody", b.member_id]) == [NONE, UNKNOWN_MEMBER_ID, NONE]
    assert coordinator.heartbeat("g", 3, c.member_id) == REBALANCE_IN_PROGRESS
    c2 = joined(join(coordinator, c.member_id))
    assert c2.generation_id == 4 and c2.leader_id == c.member_id and [m for m, _ in c2.members] == [c.member_id]


def test_leaving_during_the_barrier_completes_it(coordinator):
    a, b = stable_group_of_two(coordinator)
    a_join = join(coordinator, a.member_id)
    assert not a_join.done
    assert coordinator.leave("g", [b.member_id]) == [NONE]
    assert joined(a_join).generation_id == 3


def test_the_last_member_leaving_empties_the_group_and_bumps_the_generation(coordinator):
    a = joined(join(coordinator))
    coordinator.sync("g", 1, a.member_id, {})
    assert coordinator.leave("g", [a.member_id]) == [NONE]
    description = coordinator.describe("g")
    assert description.state == EMPTY and description.generation_id == 2 and description.members == ()
    assert coordinator.validate_commit("g", 1, a.member_id) == UNKNOWN_MEMBER_ID  # stale member
    assert coordinator.validate_commit("g", -1, "") == NONE  # a consumer with manual assignment
    assert coordinator.leave("nope", ["x"]) == [UNKNOWN_MEMBER_ID]


def test_a_member_waiting_in_join_that_leaves_is_answered(coordinator):
    a, b = stable_group_of_two(coordinator)
    b_join = join(coordinator, b.member_id, protocols=[("range", b"changed")])
    assert not b_join.done
    coordinator.leave("g", [b.member_id])
    assert b_join.result.error_code == UNKNOWN_MEMBER_ID


# --- errors -------------------------------------------------------------------------------------


def test_request_errors(coordinator):
    a = joined(join(coordinator))
    assert join(coordinator, group="").result.error_code == INVALID_GROUP_ID
    assert join(coordinator, session_ms=10).result.error_code == INVALID_SESSION_TIMEOUT
    assert join(coordinator, session_ms=1_800_001).result.error_code == INVALID_SESSION_TIMEOUT
    assert join(coordinator, "ghost").result.error_code == UNKNOWN_MEMBER_ID
    assert join(coordinator, "ghost", group="other").result.error_code == UNKNOWN_MEMBER_ID
    assert join(coordinator, protocol_type="connect").result.error_code == INCONSISTENT_GROUP_PROTOCOL
    assert join(coordinator, protocols=[("sticky", b"")]).result.error_code == INCONSISTENT_GROUP_PROTOCOL
    assert join(coordinator, protocols=[]).result.error_code == INCONSISTENT_GROUP_PROTOCOL
    assert coordinator.sync("g", 1, "ghost", {}).result.error_code == UNKNOWN_MEMBER_ID
    assert coordinator.sync("g", 7, a.member_id, {}).result.error_code == ILLEGAL_GENERATION
    assert coordinator.sync("other", 1, a.member_id, {}).result.error_code == UNKNOWN_MEMBER_ID
    assert coordinator.heartbeat("g", 1, "ghost") == UNKNOWN_MEMBER_ID
    assert coordinator.heartbeat("g", 0, a.member_id) == ILLEGAL_GENERATION
    assert coordinator.heartbeat("other", 1, a.member_id) == UNKNOWN_MEMBER_ID
    # a rebalance is under way: SyncGroup of the old generation is told to rejoin
    b_pending = join(coordinator)
    assert not b_pending.done
    assert coordinator.sync("g", 1, a.member_id, {}).result.error_code == REBALANCE_IN_PROGRESS


def test_commit_rules(coordinator, clock):
    assert coordinator.validate_commit("fresh", -1, "") == NONE  # no group: manual assignment
    assert coordinator.validate_commit("fresh", 5, "m") == ILLEGAL_GENERATION  # a member from before a restart
    assert coordinator.validate_commit("", -1, "") == INVALID_GROUP_ID
    a, b = stable_group_of_two(coordinator)
    assert coordinator.validate_commit("g", 2, a.member_id) == NONE
    assert coordinator.validate_commit("g", 1, a.member_id) == ILLEGAL_GENERATION  # stale generation
    assert coordinator.validate_commit("g", 2, "ghost") == UNKNOWN_MEMBER_ID
    assert coordinator.validate_commit("g", -1, "") == UNKNOWN_MEMBER_ID  # the group is managed
    # a commit counts as a sign of life
    clock.advance(SESSION_MS - 1)
    coordinator.validate_commit("g", 2, b.member_id)
    coordinator.heartbeat("g", 2, a.member_id)
    clock.advance(SESSION_MS - 1)
    assert coordinator.heartbeat("g", 2, b.member_id) == NONE


def test_close_answers_waiting_requests(coordinator):
    a, b = stable_group_of_two(coordinator)
    b_join = join(coordinator, b.member_id, protocols=[("range", b"x")])
    coordinator.close()
    assert b_join.result.error_code == COORDINATOR_NOT_AVAILABLE
    assert join(coordinator).result.error_code == COORDINATOR_NOT_AVAILABLE
    assert coordinator.heartbeat("g", 2, a.member_id) == COORDINATOR_NOT_AVAILABLE


def test_group_config_is_validated():
    with pytest.raises(ValueError):
        GroupConfig(min_session_timeout_ms=10, max_session_timeout_ms=5)
    with pytest.raises(ValueError):
        GroupConfig(initial_rebalance_delay_ms=-1)


# --- through the request handlers (no sockets): every version, decoded by kafka-python ------------

RESPONSE_OF = {
    JoinGroupRequest: JoinGroupResponse,
    SyncGroupRequest: SyncGroupResponse,
    HeartbeatRequest: HeartbeatResponse,
    LeaveGroupRequest: LeaveGroupResponse,
    OffsetCommitRequest: OffsetCommitResponse,
    OffsetFetchRequest: OffsetFetchResponse,
    ProduceRequest: ProduceResponse,
}
CommitTopic = OffsetCommitRequest.OffsetCommitRequestTopic
CommitPartition = CommitTopic.OffsetCommitRequestPartition


def call(broker, request_class, version, **fields):
    message = request_class[version](**fields)
    message.with_header(correlation_id=3, client_id="unit")
    request = decode_request(bytes(message.encode(header=True, framed=True))[4:])
    frame = read_parts(broker.handle(request))
    return RESPONSE_OF[request_class][version].decode(frame, header=True, framed=True)


@pytest.fixture
def broker(tmp_path):
    store = LogStore(tmp_path / "data", background=False)
    store.create_topic("t", 2)
    b = Broker(
        store,
        advertised_host="127.0.0.1",
        advertised_port=9092,
        group_config=GroupConfig(initial_rebalance_delay_ms=0),
        group_poll_s=0.01,
    )
    yield b
    b.close()
    store.close()


def join_fields(member_id="", metadata=b"sub", session_ms=SESSION_MS):
    return dict(
        group_id="g",
        session_timeout_ms=session_ms,
        rebalance_timeout_ms=REBALANCE_MS,
        member_id=member_id,
        protocol_type="consumer",
        protocols=[JoinGroupRequest.JoinGroupRequestProtocol(name="range", metadata=metadata)],
    )


def commit_fields(generation, member_id, offsets, *, metadata=None):
    by_topic = {}
    for (topic, partition), offset in offsets.items():
        by_topic.setdefault(topic, []).append(
            CommitPartition(partition_index=partition, committed_offset=offset, committed_metadata=metadata)
        )
    return dict(
        group_id="g",
        generation_id_or_member_epoch=generation,
        member_id=member_id,
        retention_time_ms=-1,
        topics=[CommitTopic(name=t, partitions=ps) for t, ps in by_topic.items()],
    )


def commit_errors(response):
    return {(t.name, p.partition_index): p.error_code for t in response.topics for p in t.partitions}


@pytest.mark.parametrize("join_v, sync_v, heartbeat_v, leave_v", [(0, 0, 0, 0), (1, 1, 1, 1), (2, 2, 2, 2),
                                                                  (3, 3, 3, 3), (4, 3, 3, 3), (5, 3, 3, 3)])
def test_a_member_lifecycle_at_every_version(broker, join_v, sync_v, heartbeat_v, leave_v):
    joined_ = call(broker, JoinGroupRequest, join_v, **join_fields())
    assert joined_.error_code == 0 and joined_.generation_id == 1 and joined_.protocol_name == "range"
    member = joined_.member_id
    assert joined_.leader == member and [(m.member_id, m.metadata) for m in joined_.members] == [(member, b"sub")]
    synced = call(broker, SyncGroupRequest, sync_v, group_id="g", generation_id=1, member_id=member,
                  assignments=[SyncGroupRequest.SyncGroupRequestAssignment(member_id=member, assignment=b"both")])
    assert (synced.error_code, synced.assignment) == (0, b"both")
    assert call(broker, HeartbeatRequest, heartbeat_v, group_id="g", generation_id=1, member_id=member).error_code == 0
    assert call(broker, HeartbeatRequest, heartbeat_v, group_id="g", generation_id=0, member_id=member).error_code == 22
    if leave_v < 3:
        left = call(broker, LeaveGroupRequest, leave_v, group_id="g", member_id=member)
        assert left.error_code == 0
        assert call(broker, LeaveGroupRequest, leave_v, group_id="g", member_id=member).error_code == 25
    else:
        identity = LeaveGroupRequest.MemberIdentity
        left = call(broker, LeaveGroupRequest, leave_v, group_id="g",
                    members=[identity(member_id=member), identity(member_id="ghost")])
        assert left.error_code == 0 and [m.error_code for m in left.members] == [0, 25]
    assert broker.groups.describe("g").state == EMPTY


@pytest.mark.parametrize("commit_v", range(2, 8))
@pytest.mark.parametrize("fetch_v", range(1, 6))
def test_offset_commit_and_fetch_at_every_version(broker, commit_v, fetch_v):
    response = call(broker, OffsetCommitRequest, commit_v, **commit_fields(-1, "", {("t", 0): 5, ("t", 1): 9},
                                                                           metadata="note"))
    assert commit_errors(response) == {("t", 0): 0, ("t", 1): 0}
    offsets_log = broker.store.log("__consumer_offsets", 0)
    assert offsets_log.durable_offset == offsets_log.log_end_offset  # fsynced before the answer
    Topic = OffsetFetchRequest.OffsetFetchRequestTopic
    fetched = call(broker, OffsetFetchRequest, fetch_v, group_id="g",
                   topics=[Topic(name="t", partition_indexes=[0, 1]), Topic(name="other", partition_indexes=[3])])
    got = {(t.name, p.partition_index): (p.committed_offset, p.metadata, p.error_code)
           for t in fetched.topics for p in t.partitions}
    assert got == {("t", 0): (5, "note", 0), ("t", 1): (9, "note", 0), ("other", 3): (-1, "", 0)}
    if fetch_v >= 2:
        everything = call(broker, OffsetFetchRequest, fetch_v, group_id="g", topics=None)
        assert everything.error_code == 0
        assert {(t.name, p.partition_index): p.committed_offset for t in everything.topics for p in t.partitions} == {
            ("t", 0): 5, ("t", 1): 9
        }
    assert {k: v.offset for k, v in broker.store.fetch_offsets("g").items()} == {("t", 0): 5, ("t", 1): 9}


def test_commits_are_checked_against_the_group_and_the_topics(broker):
    member = call(broker, JoinGroupRequest, 5, **join_fields()).member_id
    call(broker, SyncGroupRequest, 3, group_id="g", generation_id=1, member_id=member, assignments=[])
    ok = call(broker, OffsetCommitRequest, 7, **commit_fields(1, member, {("t", 0): 3, ("nope", 0): 1, ("t", 5): 1}))
    assert commit_errors(ok) == {("t", 0): 0, ("nope", 0): 3, ("t", 5): 3}
    big = call(broker, OffsetCommitRequest, 7, **commit_fields(1, member, {("t", 1): 3}, metadata="x" * 5000))
    assert commit_errors(big) == {("t", 1): 12}
    stale = call(broker, OffsetCommitRequest, 7, **commit_fields(0, member, {("t", 0): 4}))
    assert commit_errors(stale) == {("t", 0): 22}
    ghost = call(broker, OffsetCommitRequest, 7, **commit_fields(1, "ghost", {("t", 0): 4}))
    assert commit_errors(ghost) == {("t", 0): 25}
    internal = call(broker, OffsetCommitRequest, 7, **commit_fields(1, member, {("__consumer_offsets", 0): 4}))
    assert commit_errors(internal) == {("__consumer_offsets", 0): 3}
    assert {k: v.offset for k, v in broker.store.fetch_offsets("g").items()} == {("t", 0): 3}


def test_produce_to_the_offsets_topic_is_refused(broker):
    broker.store.commit_offsets("g", {("t", 0): 1})
    Topic = ProduceRequest.TopicProduceData
    response = call(broker, ProduceRequest, 8, transactional_id=None, acks=1, timeout_ms=1000, topic_data=[
        Topic(name="__consumer_offsets", partition_data=[Topic.PartitionProduceData(index=0, records=b"")])])
    assert response.responses[0].partition_responses[0].error_code == 17


def test_a_join_waits_in_the_handler_until_the_barrier_completes(broker):
    first = call(broker, JoinGroupRequest, 5, **join_fields(metadata=b"a"))
    call(broker, SyncGroupRequest, 3, group_id="g", generation_id=1, member_id=first.member_id, assignments=[])
    answers = {}
    thread = threading.Thread(target=lambda: answers.setdefault("b", call(broker, JoinGroupRequest, 5,
                                                                          **join_fields(metadata=b"b"))))
    thread.start()
    deadline = 100
    while broker.groups.describe("g").state != PREPARING_REBALANCE and deadline:
        thread.join(0.05)
        deadline -= 1
    assert call(broker, HeartbeatRequest, 3, group_id="g", generation_id=1, member_id=first.member_id).error_code == 27
    again = call(broker, JoinGroupRequest, 5, **join_fields(member_id=first.member_id, metadata=b"a"))
    thread.join(10)
    assert not thread.is_alive()
    assert again.generation_id == answers["b"].generation_id == 2
    assert sorted(m.metadata for m in again.members) == [b"a", b"b"] and answers["b"].members == []


def test_closing_the_broker_answers_a_waiting_join(broker):
    first = call(broker, JoinGroupRequest, 5, **join_fields())
    call(broker, SyncGroupRequest, 3, group_id="g", generation_id=1, member_id=first.member_id, assignments=[])
    answers = {}
    thread = threading.Thread(target=lambda: answers.setdefault("b", call(broker, JoinGroupRequest, 5, **join_fields())))
    thread.start()
    deadline = 100
    while broker.groups.describe("g").state != PREPARING_REBALANCE and deadline:
        thread.join(0.05)
        deadline -= 1
    broker.close()
    thread.join(10)
    assert answers["b"].error_code == 15
