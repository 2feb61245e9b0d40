"""Configuration of one log (one topic-partition directory).

Every size is in bytes and every duration in milliseconds, and the unit is part of the name.
Defaults follow Kafka's (``segment.bytes`` 1 GiB, ``segment.ms`` 7 days, ``index.interval.bytes``
4096, ``segment.index.bytes`` 10 MiB, ``max.message.bytes`` 1,048,588) except durability: Kafka
never fsyncs by default because replication covers a lost page cache; a single node has no replica,
so logstore defaults to an fsync at most every second (``durability="interval"``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import ConfigError

__all__ = ["LogConfig", "KAFKA_CONFIG_NAMES", "kafka_config_changes", "DURABILITY_MODES", "CLEANUP_POLICIES", "COMPRESSION_NAMES", "MAX_SEGMENT_BYTES"]

#: Positions in ``.log`` are stored as 32-bit values in ``.index``; Kafka reads them as *signed*
#: int32, so a segment must stay below 2 GiB for Kafka's tools to read our files.
MAX_SEGMENT_BYTES = 2**31 - 1

#: ``append``: every append is fsynced before it returns (concurrent appenders share one fsync,
#: group commit). ``interval``: fsync when ``flush_ms`` or ``flush_messages`` is exceeded (checked on
#: append and by the store's flusher thread). ``none``: never fsync; the OS writes back on its own.
DURABILITY_MODES = ("append", "interval", "none")
CLEANUP_POLICIES = ("delete", "compact", "compact,delete")
COMPRESSION_NAMES = ("none", "gzip", "snappy", "lz4", "zstd")


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Settings of one log; immutable, validated on construction (``ConfigError`` otherwise)."""

    segment_bytes: int = 1024 * 1024 * 1024
    segment_ms: int = 7 * 24 * 60 * 60 * 1000
    segment_index_bytes: int = 10 * 1024 * 1024
    index_interval_bytes: int = 4096
    #: the largest batch accepted; a batch also never spans segments, so the effective limit is
    #: ``min(max_batch_bytes, segment_bytes)`` (both refuse with RecordTooLargeError)
    max_batch_bytes: int = 1_048_588
    durability: str = "interval"
    flush_ms: int = 1000
    flush_messages: int | None = None
    # Retention and cleanup (applied by the store's background threads; see logstore.retention)
    retention_ms: int | None = 7 * 24 * 60 * 60 * 1000
    retention_bytes: int | None = None
    cleanup_policy: str = "delete"
    # Compaction (cleanup_policy "compact" or "compact,delete"; see logstore.compaction)
    #: a log is cleaned when dirty bytes / (clean + dirty bytes) exceeds this
    min_cleanable_dirty_ratio: float = 0.5
    #: a record stays uncompacted at least this long
    min_compaction_lag_ms: int = 0
    #: a record is compacted at most this long after it was written (None: no limit); the
    #: active segment of a compacted log also rolls by it
    max_compaction_lag_ms: int | None = None
    #: a tombstone (value None) stays readable this long after its first cleaning
    delete_retention_ms: int = 86_400_000
    #: deleted segments are renamed ``.deleted`` and unlinked this much later (readers that
    #: already hold one keep reading it in any case: the file stays open)
    file_delete_delay_ms: int = 60_000
    #: codec for records appended as Python values: none, gzip, snappy, lz4, zstd
    compression: str = "none"
    #: disk blocks reserved ahead of the end of the active segment (Linux ``fallocate`` with
    #: KEEP_SIZE: file sizes do not change): about one second of appends, from 64 KiB up to this;
    #: released when the segment rolls or the log closes. 0 turns reservation off.
    preallocate_bytes: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        def positive_int(name: str, value, minimum: int = 1, maximum: int | None = None) -> None:
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{name} must be an int, got {type(value).__name__}")
            if value < minimum or (maximum is not None and value > maximum):
                bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
                raise ConfigError(f"{name} must be {bound}, got {value}")

        positive_int("segment_bytes", self.segment_bytes, 14 + 61, MAX_SEGMENT_BYTES)
        positive_int("segment_ms", self.segment_ms)
        # at least two entries of either index (the time index keeps its last slot in reserve)
        positive_int("segment_index_bytes", self.segment_index_bytes, 24, 2**31 - 1)
        positive_int("index_interval_bytes", self.index_interval_bytes, 0, 2**31 - 1)
        positive_int("max_batch_bytes", self.max_batch_bytes, 61, MAX_SEGMENT_BYTES)
        if self.durability not in DURABILITY_MODES:
            raise ConfigError(f"durability must be one of {DURABILITY_MODES}, got {self.durability!r}")
        positive_int("flush_ms", self.flush_ms)
        if self.flush_messages is not None:
            positive_int("flush_messages", self.flush_messages)
        if self.retention_ms is not None:
            positive_int("retention_ms", self.retention_ms)
        if self.retention_bytes is not None:
            positive_int("retention_bytes", self.retention_bytes, 0)
        positive_int("file_delete_delay_ms", self.file_delete_delay_ms, 0)
        positive_int("preallocate_bytes", self.preallocate_bytes, 0, MAX_SEGMENT_BYTES)
        ratio = self.min_cleanable_dirty_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
            raise ConfigError(f"min_cleanable_dirty_ratio must be a number between 0 and 1, got {ratio!r}")
        positive_int("min_compaction_lag_ms", self.min_compaction_lag_ms, 0)
        if self.max_compaction_lag_ms is not None:
            positive_int("max_compaction_lag_ms", self.max_compaction_lag_ms)
        positive_int("delete_retention_ms", self.delete_retention_ms, 0)
        if self.cleanup_policy not in CLEANUP_POLICIES:
            raise ConfigError(f"cleanup_policy must be one of {CLEANUP_POLICIES}, got {self.cleanup_policy!r}")
        if self.compression not in COMPRESSION_NAMES:
            raise ConfigError(f"compression must be one of {COMPRESSION_NAMES}, got {self.compression!r}")

    def replace(self, **changes) -> LogConfig:
        """A copy with ``changes`` applied (validated like a new config)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LogConfig:
        """Build from a mapping; unknown keys are refused so a typo never goes unnoticed."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown log config keys: {', '.join(unknown)}")
        return cls(**data)


#: Kafka's topic config names (``kafka-topics --config``, CreateTopics) and the LogConfig field
#: each one sets. ``logstore.durability`` is logstore's own (Kafka has no such topic setting).
KAFKA_CONFIG_NAMES = {
    "segment.bytes": "segment_bytes",
    "segment.ms": "segment_ms",
    "segment.index.bytes": "segment_index_bytes",
    "index.interval.bytes": "index_interval_bytes",
    "max.message.bytes": "max_batch_bytes",
    "flush.ms": "flush_ms",
    "flush.messages": "flush_messages",
    "retention.ms": "retention_ms",
    "retention.bytes": "retention_bytes",
    "cleanup.policy": "cleanup_policy",
    "compression.type": "compression",
    "file.delete.delay.ms": "file_delete_delay_ms",
    "min.cleanable.dirty.ratio": "min_cleanable_dirty_ratio",
    "min.compaction.lag.ms": "min_compaction_lag_ms",
    "max.compaction.lag.ms": "max_compaction_lag_ms",
    "delete.retention.ms": "delete_retention_ms",
    "logstore.durability": "durability",
}
_UNSETTABLE = {"retention_ms", "retention_bytes", "flush_messages", "max_compaction_lag_ms"}  # -1 (or Long.MAX) = no limit


def kafka_config_changes(pairs, base: LogConfig | None = None) -> dict:
    """LogConfig field changes for ``(name, value)`` string pairs, as Kafka tools send them.

    Names are Kafka's (``segment.bytes``) or LogConfig's own (``segment_bytes``). Integers are
    parsed; ``-1`` means "no limit" for the limits that may be unset (``retention.ms=-1``), and
    Kafka's Long.MAX "never" for ``flush.messages``/``flush.ms`` maps to no limit / the largest
    interval. ``cleanup.policy`` takes ``delete``, ``compact`` or both; ``compression.type``
    takes a codec name, and ``producer`` (Kafka's default) changes nothing. A ``None`` value is
    skipped. The result is validated against ``base``; anything unknown or invalid raises
    :class:`ConfigError` naming it.
    """
    fields = {f.name: f for f in dataclasses.fields(LogConfig)}
    changes: dict = {}
    for name, value in pairs:
        field = KAFKA_CONFIG_NAMES.get(name, name)
        if field not in fields:
            known = ", ".join(sorted(KAFKA_CONFIG_NAMES))
            raise ConfigError(f"unknown topic config {name!r}; supported: {known} (or LogConfig field names)")
        if value is None:
            continue
        text = str(value).strip()
        if field == "cleanup_policy":
            policies = {p.strip() for p in text.split(",") if p.strip()}
            if not policies or not policies <= {"delete", "compact"}:
                raise ConfigError(f"{name}={value!r}: use delete, compact or both")
            changes[field] = ",".join(sorted(policies))
        elif field == "compression":
            if text.lower() != "producer":
                changes[field] = text.lower()
        elif field == "durability":
            changes[field] = text
        elif field == "min_cleanable_dirty_ratio":
            try:
                changes[field] = float(text)
            except ValueError:
                raise ConfigError(f"{name}={value!r} is not a number") from None
        else:
            try:
                number = int(text)
            except ValueError:
                raise ConfigError(f"{name}={value!r} is not an integer") from None
            if field in _UNSETTABLE and (number == -1 or number >= 2**63 - 1):
                changes[field] = None
            elif field == "flush_ms" and number >= 2**31:
                changes[field] = 2**31 - 1
            else:
                changes[field] = number
    (base or LogConfig()).replace(**changes)  # validates: ConfigError names the setting
    return changes
