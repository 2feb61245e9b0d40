"""LogStore: a data directory of topics, each a set of partition logs.

Layout (as Kafka lays out a log directory)::

    DATA_DIR/
      .lock                      OS lock (fcntl) held by the one process that has the store open
      logstore-topics.json       {"version": 0, "topics": {name: {"partitions": N, "config": {...}}}}
      <topic>-<partition>/       one Log per partition (see logstore.log)

Topic names follow Kafka's rules: 1 to 249 characters from ASCII letters, digits, ``.``, ``_``
and ``-``, and not ``.`` or ``..``; so no name can escape the data directory.

Appends that do not name a partition: keyed records go where Kafka's default partitioner sends
them (murmur2 of the key, made positive, modulo the partition count), so a Kafka client and
logstore agree on where a key lives; keyless records go, one append call at a time, to a sticky
partition that changes with every call.

Committed consumer offsets (``commit_offsets``/``fetch_offsets``) live in the internal compacted
topic ``__consumer_offsets`` (see :mod:`logstore.group_offsets`), created on the first commit and
read back into memory when the store opens. Internal topics are hidden from ``topics()`` (pass
``include_internal=True``), cannot be created, deleted or appended to through the topic API, and
are otherwise ordinary logs (``log()``, ``logs()``, the timer thread, the server's Fetch).

Thread safety: appends to different partitions never wait for each other (each Log has its own
lock); creating and deleting topics take the store's lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from . import group_offsets
from .config import LogConfig
from .errors import ConfigError, LogClosedError, LogLockedError, TopicError
from .files import fsync_dir, write_atomically
from .group_offsets import OFFSETS_TOPIC, GroupOffsets, OffsetAndMetadata
from .log import AppendInfo, Log

__all__ = [
    "LogStore",
    "TopicDescription",
    "PartitionAppend",
    "OffsetAndMetadata",
    "INTERNAL_TOPICS",
    "murmur2",
    "default_partition",
]

TOPICS_FILE = "logstore-topics.json"
LOCK_FILE = ".lock"
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_DELETE_SUFFIX = "-delete"

#: Topics the store manages itself (see the module docstring).
INTERNAL_TOPICS = frozenset({OFFSETS_TOPIC})


def validate_topic_name(name: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"topic name must be a str, got {type(name).__name__}")
    if name in (".", "..") or not _TOPIC_NAME.match(name):
        raise TopicError(
            f"invalid topic name {name!r}: use 1 to 249 ASCII letters, digits, '.', '_' or '-' "
            "(and not '.' or '..')"
        )


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of ``data`` (``Utils.murmur2``), as a signed 32-bit int."""
    length = len(data)
    seed = 0x9747B28C
    m = 0x5BD1E995
    r = 24
    h = (seed ^ length) & 0xFFFFFFFF
    length4 = length // 4
    for i in range(length4):
        i4 = i * 4
        k = data[i4] | (data[i4 + 1] << 8) | (data[i4 + 2] << 16) | (data[i4 + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = length % 4
    base = length & ~3
    if tail == 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def default_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partition for a keyed record: ``toPositive(murmur2(key)) % partitions``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class TopicDescription(NamedTuple):
    name: str
    partitions: int
    config: LogConfig


class PartitionAppend(NamedTuple):
    """Where part of an append went: the partition and the offsets it was given there."""

    partition: int
    base_offset: int
    last_offset: int


class LogStore:
    """A data directory of topics (created if missing); only one process may open it at a time.

    ``default_config`` applies to topics created without their own settings. ``background=True``
    starts the store's threads (:mod:`logstore.background`): the timer (roll by ``segment_ms``,
    fsync by ``flush_ms``, retention every ``retention_check_interval_ms``) and the cleaner
    (compaction every ``cleaner_backoff_ms`` within ``cleaner_memory_budget_bytes``); tests pass
    ``False`` and drive time themselves. ``offsets_topic_config`` (a dict of LogConfig changes)
    adjusts ``__consumer_offsets`` when the store creates it (default: ``default_config``, so
    commits follow its durability mode, made compact-only with 100 MiB segments at most).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        *,
        default_config: LogConfig | None = None,
        default_partitions: int = 1,
        background: bool = True,
        retention_check_interval_ms: int = 300_000,
        cleaner_backoff_ms: int = 15_000,
        cleaner_memory_budget_bytes: int = 128 * 1024 * 1024,
        clock_ms=None,
        offsets_topic_config: Mapping | None = None,
    ):
        self.data_dir = os.path.abspath(os.fspath(data_dir))
        self.default_config = default_config or LogConfig()
        if default_partitions < 1:
            raise ConfigError(f"default_partitions must be >= 1, got {default_partitions}")
        self.default_partitions = default_partitions
        self._clock_ms = clock_ms
        self._offsets_topic_changes = dict(offsets_topic_config or {})
        group_offsets.offsets_topic_config(self.default_config, self._offsets_topic_changes)  # validate now
        self._group_offsets: GroupOffsets | None = None
        self._lock = threading.RLock()
        self._closed = False
        self._sticky = 0
        os.makedirs(self.data_dir, exist_ok=True)
        self._lock_fd = self._acquire_lock()
        try:
            self._topics: dict[str, TopicDescription] = self._read_topics()
            self._logs: dict[tuple[str, int], Log] = {}
            self._remove_pending_deletes()
            for description in self._topics.values():
                for partition in range(description.partitions):
                    self._logs[(description.name, partition)] = Log(
                        self._partition_dir(description.name, partition), description.config, clock_ms=clock_ms
                    )
            if OFFSETS_TOPIC in self._topics:
                self._group_offsets = self._open_group_offsets()
        except BaseException:
            self._close_logs()
            os.close(self._lock_fd)
            raise
        self._background = None
        if background:
            from .background import Background

            self._background = Background(
                self,
                retention_check_interval_ms=retention_check_interval_ms,
                cleaner_backoff_ms=cleaner_backoff_ms,
                cleaner_memory_budget_bytes=cleaner_memory_budget_bytes,
            )
            self._background.start()

    # --- the directory lock -------------------------------------------------------------------

    def _acquire_lock(self) -> int:
        path = os.path.join(self.data_dir, LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LogLockedError(
                f"data directory {self.data_dir} is in use by process {holder} (lock file {path})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    # --- topics metadata ----------------------------------------------------------------------

    def _read_topics(self) -> dict[str, TopicDescription]:
        path = os.path.join(self.data_dir, TOPICS_FILE)
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read())
        except FileNotFoundError:
            return {}
        except ValueError as error:
            raise ConfigError(f"{path} is not valid JSON: {error}") from None
        topics = {}
        for name, entry in data.get("topics", {}).items():
            validate_topic_name(name)
            config = LogConfig.from_dict({**self.default_config.to_dict(), **entry.get("config", {})})
            topics[name] = TopicDescription(name, int(entry["partitions"]), config)
        return topics

    def _write_topics(self, topics: dict[str, TopicDescription]) -> None:
        data = {
            "version": 0,
            "topics": {
                name: {"partitions": d.partitions, "config": d.config.to_dict()} for name, d in sorted(topics.items())
            },
        }
        write_atomically(os.path.join(self.data_dir, TOPICS_FILE), json.dumps(data, indent=1).encode())

    def _partition_dir(self, topic: str, partition: int) -> str:
        return os.path.join(self.data_dir, f"{topic}-{partition}")

    def _remove_pending_deletes(self) -> None:
        for name in os.listdir(self.data_dir):
            if name.endswith(_DELETE_SUFFIX):
                shutil.rmtree(os.path.join(self.data_dir, name), ignore_errors=True)

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"store {self.data_dir} is closed")

    def create_topic(
        self, name: str, partitions: int | None = None, config: LogConfig | dict | None = None
    ) -> TopicDescription:
        """Create a topic with ``partitions`` partitions (default: the store's) and ``config``
        (a LogConfig, or a dict of changes to the store's default). An existing name raises
        :class:`TopicError`; bad values raise ``ConfigError``; nothing is created then. Internal
        topic names (``INTERNAL_TOPICS``) are reserved: ``TopicError``."""
        validate_topic_name(name)
        if name in INTERNAL_TOPICS:
            raise TopicError(f"topic {name!r} is internal: the store creates it when it is first needed")
        partitions = self.default_partitions if partitions is None else partitions
        if not isinstance(partitions, int) or isinstance(partitions, bool) or not 1 <= partitions <= 100_000:
            raise ConfigError(f"partitions must be an int between 1 and 100000, got {partitions!r}")
        if config is None:
            config = self.default_config
        elif isinstance(config, dict):
            config = LogConfig.from_dict({**self.default_config.to_dict(), **config})
        elif not isinstance(config, LogConfig):
            raise TypeError(f"config must be a LogConfig or a dict, got {type(config).__name__}")
        return self._create_topic(name, partitions, config)

    def _create_topic(self, name: str, partitions: int, config: LogConfig) -> TopicDescription:
        with self._lock:
            self._check_open()
            if name in self._topics:
                raise TopicError(f"topic {name!r} already exists")
            description = TopicDescription(name, partitions, config)
            logs = {}
            try:
                for partition in range(partitions):
                    logs[(name, partition)] = Log(self._partition_dir(name, partition), config, clock_ms=self._clock_ms)
                topics = dict(self._topics)
                topics[name] = description
                self._write_topics(topics)
            except BaseException:
                for log in logs.values():
                    log.close()
                    shutil.rmtree(log.directory, ignore_errors=True)
                raise
            fsync_dir(self.data_dir)
            self._topics = topics
            self._logs.update(logs)
            return description

    def delete_topic(self, name: str) -> None:
        """Delete a topic and its data. Its directories are renamed ``...-delete`` first (so a
        crash midway finishes the delete at the next open), then removed. The offsets groups
        committed for it are deleted too (tombstones in ``__consumer_offsets``)."""
        if name in INTERNAL_TOPICS:
            raise TopicError(f"topic {name!r} is internal and cannot be deleted")
        with self._lock:
            self._check_open()
            description = self._topic(name)
            topics = dict(self._topics)
            del topics[name]
            self._write_topics(topics)
            self._topics = topics
            tag = uuid.uuid4().hex
            for partition in range(description.partitions):
                log = self._logs.pop((name, partition))
                log.close()
                doomed = f"{log.directory}.{tag}{_DELETE_SUFFIX}"
                os.replace(log.directory, doomed)
            fsync_dir(self.data_dir)
            for partition in range(description.partitions):
                shutil.rmtree(f"{self._partition_dir(name, partition)}.{tag}{_DELETE_SUFFIX}", ignore_errors=True)
            if self._group_offsets is not None:
                self._group_offsets.delete_topic(name)

    def topics(self, *, include_internal: bool = False) -> list[str]:
        """Topic names, sorted; internal topics (``__consumer_offsets``) only if asked for."""
        if include_internal:
            return sorted(self._topics)
        return sorted(name for name in self._topics if name not in INTERNAL_TOPICS)

    def describe_topic(self, name: str) -> TopicDescription:
        return self._topic(name)

    def _topic(self, name: str) -> TopicDescription:
        try:
            return self._topics[name]
        except KeyError:
            raise TopicError(f"topic {name!r} does not exist") from None

    def log(self, topic: str, partition: int) -> Log:
        """The :class:`Log` of one partition (``TopicError`` if there is no such partition)."""
        self._check_open()
        try:
            return self._logs[(topic, partition)]
        except KeyError:
            description = self._topic(topic)
            raise TopicError(
                f"topic {topic!r} has partitions 0..{description.partitions - 1}, not {partition!r}"
            ) from None

    def logs(self) -> list[tuple[str, int, Log]]:
        return [(topic, partition, log) for (topic, partition), log in list(self._logs.items())]

    # --- data ---------------------------------------------------------------------------------

    def append(
        self,
        topic: str,
        values: Sequence[bytes | None],
        *,
        keys: Sequence[bytes | None] | None = None,
        partition: int | None = None,
        headers=None,
        timestamps_ms=None,
        compression=None,
    ) -> list[PartitionAppend]:
        """Append records to a topic; returns where they went, one entry per partition used.

        With ``partition`` given, all records go there. Otherwise keyed records go to
        :func:`default_partition` of their key and keyless ones to this call's sticky partition.
        Internal topics refuse appends (``TopicError``): use :meth:`commit_offsets`.
        """
        if topic in INTERNAL_TOPICS:
            raise TopicError(f"topic {topic!r} is internal: records are written by the store only")
        description = self._topic(topic)
        if partition is not None:
            info = self.log(topic, partition).append(
                values, keys=keys, headers=headers, timestamps_ms=timestamps_ms, compression=compression
            )
            return [PartitionAppend(partition, info.base_offset, info.last_offset)]
        count = description.partitions
        with self._lock:
            sticky = self._sticky % count
            self._sticky += 1
        if keys is None:
            info = self.log(topic, sticky).append(
                values, headers=headers, timestamps_ms=timestamps_ms, compression=compression
            )
            return [PartitionAppend(sticky, info.base_offset, info.last_offset)]
        if len(keys) != len(values):
            raise ValueError(f"{len(keys)} keys for {len(values)} values")
        groups: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            target = sticky if key is None else default_partition(bytes(key), count)
            groups.setdefault(target, []).append(i)
        results = []
        for target, indices in sorted(groups.items()):
            def pick(seq, indices=indices):
                return None if seq is None else [seq[i] for i in indices]

            ts = timestamps_ms if timestamps_ms is None or isinstance(timestamps_ms, int) else pick(timestamps_ms)
            info: AppendInfo = self.log(topic, target).append(
                pick(values), keys=pick(keys), headers=pick(headers), timestamps_ms=ts, compression=compression
            )
            results.append(PartitionAppend(target, info.base_offset, info.last_offset))
        return results

    def read(self, topic: str, partition: int, offset: int, *, max_bytes: int = 1024 * 1024):
        """Records of one partition from ``offset`` (see :meth:`Log.read`)."""
        return self.log(topic, partition).read(offset, max_bytes=max_bytes)

    def offsets(self, topic: str) -> dict[int, tuple[int, int, int]]:
        """``{partition: (log_start_offset, log_end_offset, durable_offset)}``."""
        description = self._topic(topic)
        result = {}
        for partition in range(description.partitions):
            log = self.log(topic, partition)
            result[partition] = (log.log_start_offset, log.log_end_offset, log.durable_offset)
        return result

    def offset_for_timestamp(self, topic: str, partition: int, timestamp_ms: int):
        return self.log(topic, partition).offset_for_timestamp(timestamp_ms)

    # --- committed offsets --------------------------------------------------------------------

    def _open_group_offsets(self) -> GroupOffsets:
        partitions = self._topics[OFFSETS_TOPIC].partitions
        return GroupOffsets([self._logs[(OFFSETS_TOPIC, p)] for p in range(partitions)], clock_ms=self._clock_ms)

    def _offsets_store(self, *, create: bool) -> GroupOffsets | None:
        offsets = self._group_offsets
        if offsets is not None or not create:
            self._check_open()
            return offsets
        with self._lock:
            self._check_open()
            if self._group_offsets is None:
                config = group_offsets.offsets_topic_config(self.default_config, self._offsets_topic_changes)
                self._create_topic(OFFSETS_TOPIC, 1, config)
                self._group_offsets = self._open_group_offsets()
            return self._group_offsets

    def commit_offsets(
        self, group: str, offsets: Mapping[tuple[str, int], int | OffsetAndMetadata], *, sync: bool = False
    ) -> None:
        """Commit ``{(topic, partition): offset}`` for consumer ``group``, all in one record batch
        of ``__consumer_offsets`` (so all or none survive a crash).

        An offset is the *next* record to consume, as in Kafka; give an :class:`OffsetAndMetadata`
        to attach metadata or a leader epoch. Durable as the store's durability mode promises
        (``append``: fsynced before this returns; ``interval``: within ``flush_ms``, or before
        it returns with ``sync=True``, as the server commits; ``none``: never fsynced). An unknown
        topic or partition raises :class:`TopicError`, a bad value ``ValueError``/``TypeError``;
        nothing is written then.
        """
        values: dict[tuple[str, int], OffsetAndMetadata] = {}
        for (topic, partition), value in offsets.items():
            if topic in INTERNAL_TOPICS:
                raise TopicError(f"cannot commit offsets for internal topic {topic!r}")
            self.log(topic, partition)  # TopicError if there is no such partition
            values[(topic, partition)] = value if isinstance(value, OffsetAndMetadata) else OffsetAndMetadata(value)
        if values:
            self._offsets_store(create=True).commit(group, values, sync=sync)

    def fetch_offsets(
        self, group: str, partitions: Iterable[tuple[str, int]] | None = None
    ) -> dict[tuple[str, int], OffsetAndMetadata]:
        """What ``group`` committed: ``{(topic, partition): OffsetAndMetadata}`` for every
        partition it committed, or for those of ``partitions`` it did (missing ones are absent)."""
        offsets = self._offsets_store(create=False)
        if offsets is None:
            return {}
        return offsets.fetch(group, partitions)

    def delete_offsets(self, group: str, partitions: Iterable[tuple[str, int]] | None = None) -> int:
        """Forget ``group``'s committed offsets (all, or those of ``partitions``); returns how many."""
        offsets = self._offsets_store(create=False)
        return 0 if offsets is None else offsets.delete(group, partitions)

    # --- lifecycle ----------------------------------------------------------------------------

    def _close_logs(self) -> None:
        for log in getattr(self, "_logs", {}).values():
            log.close()

    def close(self) -> None:
        """Stop the background thread, close every partition cleanly, release the lock."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._background is not None:
            self._background.stop()
        self._close_logs()
        os.close(self._lock_fd)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def cleaner_stats(self):
        """The cleaner's counters and the logs it marked uncleanable (``None`` without the
        background threads)."""
        return None if self._background is None else self._background.cleaner_stats

    def __enter__(self) -> LogStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
