"""Kafka topic configs (CreateTopics) mapped onto ``LogConfig`` fields.

Only settings with a faithful meaning in logstore are accepted; any other name, or a value that
does not parse or validate, is refused (CreateTopics answers INVALID_CONFIG, 40) rather than
silently ignored. Kafka's "-1 means unlimited" becomes ``None`` for the retention limits.

``compression.type`` accepts only ``producer`` (Kafka's default): the server stores batches as
the producer compressed them and never recompresses. ``logstore.durability`` is logstore's own:
``append`` (fsync before acknowledging every append), ``interval`` or ``none``.
"""

from __future__ import annotations

from collections.abc import Iterable

from logstore.config import LogConfig
from logstore.errors import ConfigError

__all__ = ["KAFKA_TOPIC_CONFIGS", "log_config_changes"]

_INT_FIELDS = {
    "segment.bytes": "segment_bytes",
    "segment.ms": "segment_ms",
    "segment.index.bytes": "segment_index_bytes",
    "index.interval.bytes": "index_interval_bytes",
    "max.message.bytes": "max_batch_bytes",
    "flush.ms": "flush_ms",
    "flush.messages": "flush_messages",
}
_UNLIMITED_FIELDS = {"retention.ms": "retention_ms", "retention.bytes": "retention_bytes"}

KAFKA_TOPIC_CONFIGS = frozenset(
    [*_INT_FIELDS, *_UNLIMITED_FIELDS, "cleanup.policy", "compression.type", "logstore.durability"]
)
"""The topic config names CreateTopics accepts."""


def _int(name: str, value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not an integer") from None


def log_config_changes(configs: Iterable[tuple[str, str | None]], base: LogConfig) -> dict:
    """``LogConfig`` field changes for Kafka ``(name, value)`` pairs, validated against ``base``.

    A ``None`` value means "the default" and is skipped. Raises ``ConfigError`` naming the first
    unknown config or bad value.
    """
    changes: dict = {}
    for name, value in configs:
        if name not in KAFKA_TOPIC_CONFIGS:
            raise ConfigError(f"unknown topic config {name!r}; supported: {', '.join(sorted(KAFKA_TOPIC_CONFIGS))}")
        if value is None:
            continue
        if name in _INT_FIELDS:
            number = _int(name, value)
            if name == "flush.messages" and number >= 2**31:
                changes["flush_messages"] = None  # Kafka's "never" (Long.MAX_VALUE)
            elif name == "flush.ms" and number >= 2**31:
                changes["flush_ms"] = 2**31 - 1
            else:
                changes[_INT_FIELDS[name]] = number
        elif name in _UNLIMITED_FIELDS:
            number = _int(name, value)
            changes[_UNLIMITED_FIELDS[name]] = None if number == -1 else number
        elif name == "cleanup.policy":
            policies = {p.strip() for p in value.split(",") if p.strip()}
            if not policies or not policies <= {"delete", "compact"}:
                raise ConfigError(f"cleanup.policy={value!r}: use delete, compact or both")
            changes["cleanup_policy"] = ",".join(sorted(policies))  # "compact,delete"
        elif name == "compression.type":
            if value.strip().lower() != "producer":
                raise ConfigError(
                    f"compression.type={value!r}: only 'producer' is supported "
                    "(batches are stored as the producer compressed them)"
                )
        elif name == "logstore.durability":
            changes["durability"] = value.strip()
    try:
        base.replace(**changes)
    except TypeError as e:
        raise ConfigError(str(e)) from None
    return changes
