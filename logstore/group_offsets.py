"""Committed consumer offsets, stored as Kafka stores them: in the compacted topic ``__consumer_offsets``.

Record format (Apache Kafka's own schemas, ``OffsetCommitKey.json`` / ``OffsetCommitValue.json``,
so Kafka's tools, e.g. ``kafka-dump-log --offsets-decoder``, can read our segments). Big-endian;
a *string* is an int16 byte length followed by that many UTF-8 bytes.

Offset commit key (written as version 1; version 0 has the same layout)::

    version     int16    1
    group       string   the consumer group id
    topic       string
    partition   int32

Offset commit value (written as version 3)::

    version           int16    3
    offset            int64    the next offset the group will consume
    leader_epoch      int32    -1 when unknown
    metadata          string   "" when none (Kafka stores no null here)
    commit_timestamp  int64    milliseconds since the epoch

A null value (a tombstone) deletes the key's offset; compaction later drops both. Values of
versions 0-2 (Kafka's older layouts) are read too: v0 and v2 are ``offset, metadata,
commit_timestamp``, v1 adds ``expire_timestamp`` (ignored). Group metadata records (key version
2: ``version int16, group string``, holding generations and members) are *not* written: group
membership lives in the server's memory only (``logstore.server.groups``); such records, and any
key this module cannot parse, are skipped when the log is read.

Why compaction keeps this small: each commit of (group, topic, partition) rewrites the same key,
so the cleaner keeps only the latest record per key and the topic's size is bounded by the number
of distinct keys, not by the number of commits.

Which partition of the topic holds a group: ``abs(java_string_hash(group)) % partitions``, Kafka's
rule (``GroupCoordinator.partitionFor``), so one group's records are always in one log, in commit
order. logstore creates the topic with one partition.

The in-memory view: a dict ``(group, topic, partition) -> OffsetAndMetadata`` rebuilt from the
log when it is opened, then updated by every commit once the log has accepted (and, with
``durability="append"``, fsynced) the batch. Each entry remembers the log offset of the record
that set it, so two threads committing the same key leave the view agreeing with the log: the
record written last wins in both.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

from . import batch as batch_format
from .config import LogConfig
from .errors import CorruptBatchError

__all__ = [
    "OFFSETS_TOPIC",
    "MAX_METADATA_BYTES",
    "OffsetAndMetadata",
    "OffsetKey",
    "GroupOffsets",
    "offsets_topic_config",
    "partition_for_group",
    "encode_offset_key",
    "encode_offset_value",
    "decode_key",
    "decode_offset_value",
]

logger = logging.getLogger("logstore.group_offsets")

OFFSETS_TOPIC = "__consumer_offsets"

#: Kafka's ``offset.metadata.max.bytes``: longer metadata strings are refused.
MAX_METADATA_BYTES = 4096

OFFSET_KEY_VERSION = 1
GROUP_METADATA_KEY_VERSION = 2
OFFSET_VALUE_VERSION = 3

_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_INT64 = struct.Struct(">q")
_OFFSET_EPOCH = struct.Struct(">qi")  # v3: offset, leader_epoch
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1

# 1 MiB of batches per read while rebuilding the view (one segment read at a time)
_REBUILD_READ_BYTES = 1024 * 1024


class OffsetAndMetadata(NamedTuple):
    """A committed position: ``offset`` is the next record the group will read."""

    offset: int
    metadata: str = ""
    leader_epoch: int = -1
    commit_timestamp_ms: int = -1


class OffsetKey(NamedTuple):
    group: str
    topic: str
    partition: int


def offsets_topic_config(base: LogConfig, changes: Mapping | None = None) -> LogConfig:
    """The config of ``__consumer_offsets``: ``base`` (the store's default, so commits follow the
    store's durability mode) made compact-only, with Kafka's ``offsets.topic.segment.bytes``
    (100 MiB) as the ceiling, then ``changes`` applied."""
    config = base.replace(
        cleanup_policy="compact",
        segment_bytes=min(base.segment_bytes, 100 * 1024 * 1024),
        compression="none",
    )
    if changes:
        config = LogConfig.from_dict({**config.to_dict(), **dict(changes)})
    return config


def java_string_hash(text: str) -> int:
    """Java's ``String.hashCode`` (over UTF-16 code units, int32 wrap-around)."""
    h = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for_group(group: str, partitions: int) -> int:
    """Kafka's ``Utils.abs(group.hashCode) % partitions`` (``Utils.abs(MIN_VALUE)`` is 0)."""
    h = java_string_hash(group)
    return (0 if h == _INT32_MIN else abs(h)) % partitions


# --- the record format (see the module docstring) ----------------------------------------------


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 0x7FFF:
        raise ValueError(f"string of {len(data)} bytes does not fit a Kafka string (32767 bytes)")
    return _INT16.pack(len(data)) + data


def _read_string(data: bytes, at: int) -> tuple[str, int]:
    (length,) = _INT16.unpack_from(data, at)
    at += 2
    if length < 0 or at + length > len(data):
        raise ValueError(f"string length {length} at byte {at - 2} runs past the record")
    return data[at : at + length].decode("utf-8"), at + length


def encode_offset_key(group: str, topic: str, partition: int) -> bytes:
    return b"".join((_INT16.pack(OFFSET_KEY_VERSION), _string(group), _string(topic), _INT32.pack(partition)))


def encode_offset_value(value: OffsetAndMetadata) -> bytes:
    return b"".join(
        (
            _INT16.pack(OFFSET_VALUE_VERSION),
            _OFFSET_EPOCH.pack(value.offset, value.leader_epoch),
            _string(value.metadata),
            _INT64.pack(value.commit_timestamp_ms),
        )
    )


def decode_key(data: bytes) -> OffsetKey | str:
    """An :class:`OffsetKey`, or the group id (a ``str``) of a group metadata key.

    Raises ``ValueError`` for any other version or a malformed key.
    """
    try:
        (version,) = _INT16.unpack_from(data, 0)
        group, at = _read_string(data, 2)
        if version == GROUP_METADATA_KEY_VERSION:
            if at != len(data):
                raise ValueError("trailing bytes")
            return group
        if version not in (0, OFFSET_KEY_VERSION):
            raise ValueError(f"unknown key version {version}")
        topic, at = _read_string(data, at)
        (partition,) = _INT32.unpack_from(data, at)
    except (struct.error, UnicodeDecodeError) as e:
        raise ValueError(f"malformed __consumer_offsets key: {e}") from None
    if at + 4 != len(data):
        raise ValueError(f"malformed __consumer_offsets key: {len(data) - at - 4} trailing bytes")
    return OffsetKey(group, topic, partition)


def decode_offset_value(data: bytes) -> OffsetAndMetadata:
    """Decode an offset commit value of version 0-3; ``ValueError`` otherwise."""
    try:
        (version,) = _INT16.unpack_from(data, 0)
        if version == 3:
            offset, leader_epoch = _OFFSET_EPOCH.unpack_from(data, 2)
            metadata, at = _read_string(data, 14)
        elif version in (0, 1, 2):
            (offset,) = _INT64.unpack_from(data, 2)
            leader_epoch = -1
            metadata, at = _read_string(data, 10)
        else:
            raise ValueError(f"unknown value version {version}")
        (timestamp,) = _INT64.unpack_from(data, at)
        at += 8 + (8 if version == 1 else 0)  # v1's expire_timestamp
    except (struct.error, UnicodeDecodeError) as e:
        raise ValueError(f"malformed __consumer_offsets value: {e}") from None
    if at != len(data):
        raise ValueError(f"malformed __consumer_offsets value: {len(data) - at} trailing bytes")
    return OffsetAndMetadata(offset, metadata, leader_epoch, timestamp)


def check_offset(value: OffsetAndMetadata) -> None:
    """``ValueError``/``TypeError`` unless ``value`` fits the record format and the metadata limit."""
    if not isinstance(value.offset, int) or isinstance(value.offset, bool):
        raise TypeError(f"offset must be an int, got {type(value.offset).__name__}")
    if not _INT64_MIN <= value.offset <= _INT64_MAX:
        raise ValueError(f"offset {value.offset} does not fit in int64")
    if not isinstance(value.leader_epoch, int) or not _INT32_MIN <= value.leader_epoch <= _INT32_MAX:
        raise ValueError(f"leader_epoch {value.leader_epoch!r} must be an int32")
    if not isinstance(value.metadata, str):
        raise TypeError(f"metadata must be a str, got {type(value.metadata).__name__}")
    if len(value.metadata.encode("utf-8")) > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is longer than {MAX_METADATA_BYTES} bytes (Kafka's offset.metadata.max.bytes)")


# --- the store ----------------------------------------------------------------------------------


class GroupOffsets:
    """Committed offsets on the logs of ``__consumer_offsets`` (one :class:`~logstore.log.Log` per
    partition, in partition order), with the in-memory view rebuilt from them now.

    Thread-safe. ``clock_ms`` gives commit timestamps (default: the wall clock). The logs stay
    owned by whoever opened them (the store).
    """

    def __init__(self, logs: Sequence, *, clock_ms: Callable[[], int] | None = None):
        if not logs:
            raise ValueError("GroupOffsets needs at least one log")
        self._logs = list(logs)
        self._clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self._lock = threading.Lock()
        # (group, topic, partition) -> (log offset of the record that set it, value)
        self._view: dict[OffsetKey, tuple[int, OffsetAndMetadata]] = {}
        self.records_read = 0
        self.records_skipped = 0
        for log in self._logs:
            self._rebuild(log)

    # --- reading the log at open --------------------------------------------------------------

    def _rebuild(self, log) -> None:
        """Replay ``log`` from its start into the view (the latest record of each key wins)."""
        offset = log.log_start_offset
        end = log.log_end_offset
        while offset < end:
            region = log.read_slice(offset, max_bytes=_REBUILD_READ_BYTES)
            if region.size == 0:
                break
            data = region.read()
            next_offset = offset
            for position, header in batch_format.iter_batches(data, path=region.path):
                # iter_batches has checked the CRC already
                columns = batch_format.decode_columns(data, position, path=region.path, verify_crc=False)
                for log_offset, key, value in zip(columns.offsets.tolist(), columns.keys, columns.values, strict=True):
                    if log_offset >= offset:
                        self._replay(log_offset, key, value)
                next_offset = header.next_offset
            if next_offset <= offset:  # a slice always holds a whole batch; this is damage
                raise CorruptBatchError(
                    f"no whole batch at offset {offset} below the log end {end}", path=region.path
                )
            offset = next_offset

    def _replay(self, log_offset: int, key: bytes | None, value: bytes | None) -> None:
        self.records_read += 1
        try:
            decoded = decode_key(key) if key is not None else None
            if not isinstance(decoded, OffsetKey):  # group metadata (not used here) or keyless
                self.records_skipped += 1
                return
            if value is None:
                self._view.pop(decoded, None)
            else:
                self._view[decoded] = (log_offset, decode_offset_value(value))
        except ValueError as e:
            self.records_skipped += 1
            logger.warning("skipping record %d of %s: %s", log_offset, OFFSETS_TOPIC, e)

    # --- writing ------------------------------------------------------------------------------

    def _log_for(self, group: str):
        return self._logs[partition_for_group(group, len(self._logs))]

    def commit(self, group: str, offsets: Mapping[tuple[str, int], OffsetAndMetadata], *, sync: bool = False) -> None:
        """Append one batch holding every offset of ``offsets`` (all of a call or none), then
        show them in the view. Returns once the log accepted the batch (fsynced first with
        ``durability="append"``, or with ``sync=True`` unless the durability is ``none``;
        otherwise within ``flush_ms``).

        A commit timestamp of -1 is replaced by now. Raises ``ValueError``/``TypeError`` for a
        value that does not fit the format (see :func:`check_offset`); ``OSError`` and
        ``LogClosedError`` pass through, and then nothing is shown in the view.
        """
        _check_group(group)
        if not offsets:
            return
        now = self._clock_ms()
        keys, values, entries = [], [], []
        for (topic, partition), value in offsets.items():
            if value.commit_timestamp_ms == -1:
                value = value._replace(commit_timestamp_ms=now)
            check_offset(value)
            if not isinstance(partition, int) or not 0 <= partition <= _INT32_MAX:
                raise ValueError(f"partition must be an int between 0 and {_INT32_MAX}, got {partition!r}")
            key = OffsetKey(group, topic, partition)
            keys.append(encode_offset_key(group, topic, partition))
            values.append(encode_offset_value(value))
            entries.append((key, value))
        log = self._log_for(group)
        info = log.append(values, keys=keys, timestamps_ms=now)
        if sync and log.config.durability == "interval":
            log.sync()
        self._apply(info.base_offset, entries)

    def delete(self, group: str, partitions: Iterable[tuple[str, int]] | None = None) -> int:
        """Write tombstones for the group's committed offsets (all of them, or ``partitions``);
        returns how many existed."""
        _check_group(group)
        with self._lock:
            existing = [k for k in self._view if k.group == group]
        if partitions is not None:
            wanted = {OffsetKey(group, t, p) for t, p in partitions}
            existing = [k for k in existing if k in wanted]
        if not existing:
            return 0
        keys = [encode_offset_key(*k) for k in existing]
        info = self._log_for(group).append([None] * len(keys), keys=keys)
        self._apply(info.base_offset, [(k, None) for k in existing])
        return len(existing)

    def delete_topic(self, topic: str) -> int:
        """Tombstone every group's offsets of ``topic`` (the topic was deleted); returns how many."""
        by_group: dict[str, list[tuple[str, int]]] = {}
        with self._lock:
            for key in self._view:
                if key.topic == topic:
                    by_group.setdefault(key.group, []).append((key.topic, key.partition))
        return sum(self.delete(group, partitions) for group, partitions in sorted(by_group.items()))

    def _apply(self, base_offset: int, entries: list[tuple[OffsetKey, OffsetAndMetadata | None]]) -> None:
        with self._lock:
            for i, (key, value) in enumerate(entries):
                log_offset = base_offset + i
                current = self._view.get(key)
                if current is not None and current[0] > log_offset:
                    continue  # a later record of this key is already in the view
                if value is None:
                    self._view.pop(key, None)
                else:
                    self._view[key] = (log_offset, value)

    # --- reading the view ---------------------------------------------------------------------

    def fetch(self, group: str, partitions: Iterable[tuple[str, int]] | None = None) -> dict[tuple[str, int], OffsetAndMetadata]:
        """``{(topic, partition): OffsetAndMetadata}`` of what ``group`` committed: every
        partition, or only those of ``partitions`` that have a committed offset."""
        with self._lock:
            if partitions is None:
                return {(k.topic, k.partition): v for k, (_o, v) in self._view.items() if k.group == group}
            out = {}
            for topic, partition in partitions:
                entry = self._view.get(OffsetKey(group, topic, partition))
                if entry is not None:
                    out[(topic, partition)] = entry[1]
            return out

    def groups(self) -> list[str]:
        """Groups with at least one committed offset."""
        with self._lock:
            return sorted({k.group for k in self._view})

    def __len__(self) -> int:
        with self._lock:
            return len(self._view)


def _check_group(group: str) -> None:
    if not isinstance(group, str):
        raise TypeError(f"group must be a str, got {type(group).__name__}")
    if not group:
        raise ValueError("group must not be empty")
