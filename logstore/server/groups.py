"""The group coordinator: Kafka's classic consumer-group protocol as a state machine, without IO.

Theory of operation. A group is in one of four states:

* ``Empty``: no members (offsets may still be committed, by consumers that assign partitions
  themselves: generation -1).
* ``PreparingRebalance``: the *join barrier*. Every member must send JoinGroup again; the
  barrier completes when all known members have, or when the rebalance deadline passes (the
  largest ``rebalance_timeout_ms`` of the members, counted from the start of the rebalance), in
  which case the members that did not rejoin are removed. A group rebalancing from Empty also
  waits ``initial_rebalance_delay_ms`` (Kafka's ``group.initial.rebalance.delay.ms``), extended
  by each new member up to the deadline, so consumers started together land in one generation.
* ``CompletingRebalance``: the barrier completed: the generation id was incremented, a protocol
  common to all members chosen (each member votes for its most preferred protocol among those
  every member supports; the most votes win), a leader kept or chosen (the first member), and
  every JoinGroup answered; the leader's answer lists the members with their metadata. Now
  every member sends SyncGroup; followers wait until the leader's SyncGroup brings the
  assignment.
* ``Stable``: the leader's assignment was handed out. A member joining, leaving, timing out,
  or the leader (or a member with new metadata) rejoining starts a new rebalance.

Liveness: a member is alive while one of its JoinGroup/SyncGroup requests is waiting here, or
until ``session_timeout_ms`` after its last request (heartbeat, join, sync, commit). Expired
members are removed as if they had left. Errors follow Kafka: UNKNOWN_MEMBER_ID (25) for a
member or group the coordinator does not know, ILLEGAL_GENERATION (22) for a stale generation,
REBALANCE_IN_PROGRESS (27) to tell a member to rejoin, INCONSISTENT_GROUP_PROTOCOL (23) when a
member shares no protocol with the group, INVALID_SESSION_TIMEOUT (26), INVALID_GROUP_ID (24).

IO and time: nothing here blocks or reads a clock of its own. Time comes from ``clock_ms`` and is
looked at on every call; ``tick()`` applies deadlines (session expiry, the join barrier) when
nothing else calls. JoinGroup and SyncGroup return a :class:`Pending` answer that completes
when the group moves on; the server's connection thread waits on it, calling ``tick()`` while it
waits (so no extra thread is needed), and tests complete it by calling the coordinator with a
fake clock. One lock guards every group; no call does IO under it.

Out of scope (stated so nobody looks for them): static membership (``group_instance_id``, KIP-345)
is ignored, members are always dynamic; KIP-394's MEMBER_ID_REQUIRED round trip is not used (a
JoinGroup with an empty member id joins at once); KIP-848 (ConsumerGroupHeartbeat) and
cooperative rebalancing protocol changes on the broker side do not exist here (cooperative
assignors still work: they are a client-side protocol over these same requests); group state
(generations, members) is in memory only, so a server restart starts every group afresh at
generation 1 and members rejoin when their heartbeat gets UNKNOWN_MEMBER_ID. Committed offsets
are durable (``logstore.group_offsets``); they are not written here.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "GroupConfig",
    "GroupCoordinator",
    "GroupDescription",
    "JoinResult",
    "MemberDescription",
    "Pending",
    "SyncResult",
    "EMPTY",
    "PREPARING_REBALANCE",
    "COMPLETING_REBALANCE",
    "STABLE",
]

# Kafka error codes used by the coordinator.
NONE = 0
COORDINATOR_NOT_AVAILABLE = 15
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
INVALID_GROUP_ID = 24
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
REBALANCE_IN_PROGRESS = 27

EMPTY = "Empty"
PREPARING_REBALANCE = "PreparingRebalance"
COMPLETING_REBALANCE = "CompletingRebalance"
STABLE = "Stable"


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """Coordinator settings, with Kafka's broker defaults (``group.*`` properties)."""

    min_session_timeout_ms: int = 6_000
    max_session_timeout_ms: int = 1_800_000
    initial_rebalance_delay_ms: int = 3_000

    def __post_init__(self) -> None:
        if not 0 < self.min_session_timeout_ms <= self.max_session_timeout_ms:
            raise ValueError(
                f"need 0 < min_session_timeout_ms ({self.min_session_timeout_ms}) <= "
                f"max_session_timeout_ms ({self.max_session_timeout_ms})"
            )
        if self.initial_rebalance_delay_ms < 0:
            raise ValueError(f"initial_rebalance_delay_ms must be >= 0, got {self.initial_rebalance_delay_ms}")


class JoinResult(NamedTuple):
    """The answer to a JoinGroup. ``members`` (member id, metadata of the chosen protocol) is
    filled for the leader only."""

    error_code: int
    generation_id: int = -1
    protocol_name: str = ""
    leader_id: str = ""
    member_id: str = ""
    members: tuple[tuple[str, bytes], ...] = ()


class SyncResult(NamedTuple):
    error_code: int
    assignment: bytes = b""


class MemberDescription(NamedTuple):
    member_id: str
    client_id: str
    client_host: str
    assignment: bytes


class GroupDescription(NamedTuple):
    """A snapshot of one group (for tests, logs and tools)."""

    group_id: str
    state: str
    generation_id: int
    protocol_type: str | None
    protocol_name: str | None
    leader_id: str | None
    members: tuple[MemberDescription, ...]


class Pending:
    """An answer that may not be known yet (JoinGroup and SyncGroup wait for other members).

    ``wait(timeout_s)`` blocks until it is known or the timeout passes and returns whether it is
    known; ``result`` is then the :class:`JoinResult` or :class:`SyncResult`.
    """

    __slots__ = ("_event", "result")

    def __init__(self, result=None):
        self._event = threading.Event()
        self.result = result
        if result is not None:
            self._event.set()

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout_s: float | None = None) -> bool:
        return self._event.wait(timeout_s)

    def _complete(self, result) -> None:
        if not self._event.is_set():
            self.result = result
            self._event.set()


@dataclass(slots=True)
class _Member:
    member_id: str
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocols: tuple[tuple[str, bytes], ...]
    last_seen_ms: int
    join: Pending | None = None
    sync: Pending | None = None
    assignment: bytes = b""

    def alive(self, now_ms: int) -> bool:
        return self.join is not None or self.sync is not None or now_ms - self.last_seen_ms < self.session_timeout_ms

    def protocol_names(self) -> list[str]:
        return [name for name, _metadata in self.protocols]

    def metadata_for(self, protocol: str) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        raise KeyError(protocol)


@dataclass(slots=True)
class _Group:
    group_id: str
    state: str = EMPTY
    generation_id: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str | None = None
    members: dict[str, _Member] = field(default_factory=dict)  # in joining order
    rebalance_deadline_ms: int = 0
    not_before_ms: int = 0  # the initial rebalance delay: the barrier stays closed until then
    initial_rebalance: bool = False


class GroupCoordinator:
    """Consumer groups of one node; see the module docstring. Thread-safe.

    ``clock_ms`` is a monotonic millisecond clock (default ``time.monotonic``), replaced by tests.
    """

    def __init__(self, config: GroupConfig | None = None, *, clock_ms: Callable[[], int] | None = None):
        self.config = config or GroupConfig()
        self._clock_ms = clock_ms or (lambda: int(time.monotonic() * 1000))
        self._lock = threading.Lock()
        self._groups: dict[str, _Group] = {}
        self._closed = False

    # --- JoinGroup ----------------------------------------------------------------------------

    def join(
        self,
        group_id: str,
        member_id: str,
        *,
        protocol_type: str,
        protocols: Sequence[tuple[str, bytes]],
        session_timeout_ms: int,
        rebalance_timeout_ms: int | None = None,
        client_id: str = "",
        client_host: str = "",
    ) -> Pending:
        """A JoinGroup; the :class:`Pending` completes with a :class:`JoinResult` when the
        barrier completes (at once for an error, or for a follower of a settled group that
        rejoins with unchanged metadata). ``member_id=""`` joins as a new member.
        ``rebalance_timeout_ms=None`` (JoinGroup v0) means the session timeout."""
        protocols = tuple((str(name), bytes(metadata)) for name, metadata in protocols)
        if rebalance_timeout_ms is None or rebalance_timeout_ms < 0:
            rebalance_timeout_ms = session_timeout_ms
        with self._lock:
            now = self._clock_ms()
            self._tick_locked(now)
            if self._closed:
                return Pending(JoinResult(COORDINATOR_NOT_AVAILABLE, member_id=member_id))
            if not group_id:
                return Pending(JoinResult(INVALID_GROUP_ID, member_id=member_id))
            config = self.config
            if not config.min_session_timeout_ms <= session_timeout_ms <= config.max_session_timeout_ms:
                return Pending(JoinResult(INVALID_SESSION_TIMEOUT, member_id=member_id))
            group = self._groups.get(group_id)
            if member_id and (group is None or member_id not in group.members):
                return Pending(JoinResult(UNKNOWN_MEMBER_ID, member_id=member_id))
            if not protocols or not protocol_type or (
                group is not None and not self._compatible(group, member_id, protocol_type, protocols)
            ):
                return Pending(JoinResult(INCONSISTENT_GROUP_PROTOCOL, member_id=member_id))
            if group is None:
                group = self._groups[group_id] = _Group(group_id)
            if not group.members:
                group.protocol_type = protocol_type
            pending = Pending()
            if not member_id:
                member = _Member(
                    member_id=f"{client_id or 'member'}-{uuid.uuid4()}",
                    client_id=client_id,
                    client_host=client_host,
                    session_timeout_ms=session_timeout_ms,
                    rebalance_timeout_ms=rebalance_timeout_ms,
                    protocols=protocols,
                    last_seen_ms=now,
                    join=pending,
                )
                group.members[member.member_id] = member
                if group.state == PREPARING_REBALANCE:
                    if group.initial_rebalance:  # another consumer of a starting group: wait a bit more
                        group.not_before_ms = min(now + config.initial_rebalance_delay_ms, group.rebalance_deadline_ms)
                else:
                    self._prepare_rebalance(group, now)
                self._maybe_complete_join(group, now)
                return pending
            member = group.members[member_id]
            changed = member.protocols != protocols
            member.protocols = protocols
            member.session_timeout_ms = session_timeout_ms
            member.rebalance_timeout_ms = rebalance_timeout_ms
            member.last_seen_ms = now
            if member.join is not None:  # an earlier JoinGroup of this member still waits
                member.join._complete(JoinResult(REBALANCE_IN_PROGRESS, member_id=member_id))
            if group.state in (STABLE, COMPLETING_REBALANCE) and not changed and (
                group.state == COMPLETING_REBALANCE or member_id != group.leader_id
            ):
                # it lost our answer, or is a follower checking in: nothing needs to change
                pending._complete(self._join_result(group, member))
                return pending
            member.join = pending
            if group.state != PREPARING_REBALANCE:
                self._prepare_rebalance(group, now)
            self._maybe_complete_join(group, now)
            return pending

    @staticmethod
    def _compatible(group: _Group, member_id: str, protocol_type: str, protocols) -> bool:
        others = [m for m in group.members.values() if m.member_id != member_id]
        if not others:
            return True
        if protocol_type != group.protocol_type:
            return False
        common = {name for name, _metadata in protocols}
        for other in others:
            common &= set(other.protocol_names())
        return bool(common)

    def _prepare_rebalance(self, group: _Group, now: int) -> None:
        """Open the join barrier; members waiting in SyncGroup are told to rejoin."""
        for member in group.members.values():
            if member.sync is not None:
                member.sync._complete(SyncResult(REBALANCE_IN_PROGRESS))
                member.sync = None
                member.last_seen_ms = now  # its session restarts when its wait ends
        group.initial_rebalance = group.state == EMPTY
        group.state = PREPARING_REBALANCE
        timeout = max((m.rebalance_timeout_ms for m in group.members.values()), default=0)
        group.rebalance_deadline_ms = now + timeout
        delay = self.config.initial_rebalance_delay_ms if group.initial_rebalance else 0
        group.not_before_ms = min(now + delay, group.rebalance_deadline_ms)

    def _maybe_complete_join(self, group: _Group, now: int) -> None:
        if group.state != PREPARING_REBALANCE:
            return
        past_deadline = now >= group.rebalance_deadline_ms
        if not past_deadline:
            if now < group.not_before_ms:
                return
            if any(m.join is None for m in group.members.values()):
                return
        for member in [m for m in group.members.values() if m.join is None]:
            del group.members[member.member_id]  # did not rejoin in time
        group.generation_id += 1
        for member in group.members.values():
            member.assignment = b""
        if not group.members:
            self._become_empty(group)
            return
        group.protocol_name = self._select_protocol(group)
        if group.leader_id not in group.members:
            group.leader_id = next(iter(group.members))
        group.state = COMPLETING_REBALANCE
        group.initial_rebalance = False
        for member in group.members.values():
            member.last_seen_ms = now  # the session restarts with the new generation
            member.join._complete(self._join_result(group, member))
            member.join = None

    @staticmethod
    def _select_protocol(group: _Group) -> str:
        members = list(group.members.values())
        candidates = set(members[0].protocol_names())
        for member in members[1:]:
            candidates &= set(member.protocol_names())
        votes: dict[str, int] = {}
        for member in members:
            choice = next(name for name in member.protocol_names() if name in candidates)
            votes[choice] = votes.get(choice, 0) + 1
        # most votes; ties go to the leader-to-be's (the first member's) preference order
        order = {name: i for i, name in enumerate(members[0].protocol_names())}
        return max(votes, key=lambda name: (votes[name], -order[name]))

    @staticmethod
    def _join_result(group: _Group, member: _Member) -> JoinResult:
        members: tuple[tuple[str, bytes], ...] = ()
        if member.member_id == group.leader_id:
            members = tuple((m.member_id, m.metadata_for(group.protocol_name)) for m in group.members.values())
        return JoinResult(
            NONE, group.generation_id, group.protocol_name, group.leader_id, member.member_id, members
        )

    def _become_empty(self, group: _Group) -> None:
        group.state = EMPTY
        group.protocol_name = None
        group.protocol_type = None
        group.leader_id = None
        group.initial_rebalance = False

    # --- SyncGroup ----------------------------------------------------------------------------

    def sync(
        self, group_id: str, generation_id: int, member_id: str, assignments: Mapping[str, bytes]
    ) -> Pending:
        """A SyncGroup; the :class:`Pending` completes with a :class:`SyncResult` once the
        leader's assignment is known (``assignments`` is used only from the leader)."""
        with self._lock:
            now = self._clock_ms()
            self._tick_locked(now)
            if self._closed:
                return Pending(SyncResult(COORDINATOR_NOT_AVAILABLE))
            group = self._groups.get(group_id)
            member = group.members.get(member_id) if group is not None else None
            if member is None:
                return Pending(SyncResult(UNKNOWN_MEMBER_ID))
            if generation_id != group.generation_id:
                return Pending(SyncResult(ILLEGAL_GENERATION))
            if group.state == PREPARING_REBALANCE:
                return Pending(SyncResult(REBALANCE_IN_PROGRESS))
            member.last_seen_ms = now
            if group.state == STABLE:
                return Pending(SyncResult(NONE, member.assignment))
            # CompletingRebalance
            if member.sync is not None:
                member.sync._complete(SyncResult(REBALANCE_IN_PROGRESS))
            pending = member.sync = Pending()
            if member_id == group.leader_id:
                for m in group.members.values():
                    m.assignment = bytes(assignments.get(m.member_id, b""))
                group.state = STABLE
                for m in group.members.values():
                    if m.sync is not None:
                        m.sync._complete(SyncResult(NONE, m.assignment))
                        m.sync = None
                        m.last_seen_ms = now
            return pending

    # --- Heartbeat, LeaveGroup, commits -------------------------------------------------------

    def heartbeat(self, group_id: str, generation_id: int, member_id: str) -> int:
        """A Heartbeat; returns its error code (0: carry on; 27: rejoin)."""
        with self._lock:
            now = self._clock_ms()
            self._tick_locked(now)
            if self._closed:
                return COORDINATOR_NOT_AVAILABLE
            group = self._groups.get(group_id)
            member = group.members.get(member_id) if group is not None else None
            if member is None:
                return UNKNOWN_MEMBER_ID
            if generation_id != group.generation_id:
                return ILLEGAL_GENERATION
            member.last_seen_ms = now
            return REBALANCE_IN_PROGRESS if group.state == PREPARING_REBALANCE else NONE

    def leave(self, group_id: str, member_ids: Sequence[str]) -> list[int]:
        """A LeaveGroup of ``member_ids``; returns an error code per member (0 or 25). The
        others rebalance."""
        with self._lock:
            now = self._clock_ms()
            self._tick_locked(now)
            group = self._groups.get(group_id)
            errors = []
            for member_id in member_ids:
                member = group.members.get(member_id) if group is not None else None
                if member is None:
                    errors.append(UNKNOWN_MEMBER_ID)
                    continue
                self._remove_member(group, member, now)
                errors.append(NONE)
            return errors

    def _remove_member(self, group: _Group, member: _Member, now: int) -> None:
        del group.members[member.member_id]
        for pending in (member.join, member.sync):
            if pending is not None:
                pending._complete(JoinResult(UNKNOWN_MEMBER_ID) if pending is member.join else SyncResult(UNKNOWN_MEMBER_ID))
        member.join = member.sync = None
        if group.state in (STABLE, COMPLETING_REBALANCE):
            self._prepare_rebalance(group, now)
        self._maybe_complete_join(group, now)

    def validate_commit(self, group_id: str, generation_id: int, member_id: str) -> int:
        """May this OffsetCommit be stored? Returns 0 or the error code to answer.

        Generation -1 is a consumer that assigns partitions itself: allowed while the group has
        no members (or does not exist); with generation >= 0 an unknown group means a member of
        an older life of the group (before a restart): 22. Otherwise the member must be known
        and in the current generation; commits are refused (27) only while the new generation
        waits for its assignment. Commits of the current generation during the join barrier
        are allowed: consumers commit before they rejoin.
        """
        with self._lock:
            now = self._clock_ms()
            self._tick_locked(now)
            if self._closed:
                return COORDINATOR_NOT_AVAILABLE
            if not group_id:
                return INVALID_GROUP_ID
            group = self._groups.get(group_id)
            if group is None or group.state == EMPTY:
                if generation_id < 0:
                    return NONE
                return ILLEGAL_GENERATION if group is None else UNKNOWN_MEMBER_ID
            member = group.members.get(member_id)
            if member is None:
                return UNKNOWN_MEMBER_ID
            if generation_id != group.generation_id:
                return ILLEGAL_GENERATION
            if group.state == COMPLETING_REBALANCE:
                return REBALANCE_IN_PROGRESS
            member.last_seen_ms = now
            return NONE

    # --- time ---------------------------------------------------------------------------------

    def tick(self) -> None:
        """Apply deadlines now: expire silent members, complete overdue join barriers."""
        with self._lock:
            self._tick_locked(self._clock_ms())

    def _tick_locked(self, now: int) -> None:
        for group in self._groups.values():
            for member in [m for m in group.members.values() if not m.alive(now)]:
                self._remove_member(group, member, now)
            self._maybe_complete_join(group, now)

    # --- inspection and shutdown --------------------------------------------------------------

    def describe(self, group_id: str) -> GroupDescription | None:
        with self._lock:
            group = self._groups.get(group_id)
            if group is None:
                return None
            return GroupDescription(
                group.group_id,
                group.state,
                group.generation_id,
                group.protocol_type,
                group.protocol_name,
                group.leader_id,
                tuple(
                    MemberDescription(m.member_id, m.client_id, m.client_host, m.assignment)
                    for m in group.members.values()
                ),
            )

    def groups(self) -> list[str]:
        with self._lock:
            return sorted(self._groups)

    def close(self) -> None:
        """Answer every waiting JoinGroup/SyncGroup with COORDINATOR_NOT_AVAILABLE (15); later
        calls get it too. The server calls this when it stops."""
        with self._lock:
            self._closed = True
            for group in self._groups.values():
                for member in group.members.values():
                    if member.join is not None:
                        member.join._complete(JoinResult(COORDINATOR_NOT_AVAILABLE, member_id=member.member_id))
                    if member.sync is not None:
                        member.sync._complete(SyncResult(COORDINATOR_NOT_AVAILABLE))
                    member.join = member.sync = None
