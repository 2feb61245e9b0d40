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

from logstore.config import KAFKA_CONFIG_NAMES, LogConfig, kafka_config_changes
from logstore.errors import ConfigError

__all__ = ["KAFKA_TOPIC_CONFIGS", "log_config_changes"]

KAFKA_TOPIC_CONFIGS = frozenset(KAFKA_CONFIG_NAMES)
"""The topic config names CreateTopics accepts."""


def log_config_changes(configs: Iterable[tuple[str, str | None]], base: LogConfig) -> dict:
    """``LogConfig`` field changes for Kafka ``(name, value)`` pairs, validated against ``base``.

    A ``None`` value means "the default" and is skipped. Raises ``ConfigError`` naming the first
    unknown config or bad value. Only Kafka's dotted names are accepted over the wire.
    """
    configs = list(configs)
    for name, value in configs:
        if name not in KAFKA_TOPIC_CONFIGS:
            raise ConfigError(f"unknown topic config {name!r}; supported: {', '.join(sorted(KAFKA_TOPIC_CONFIGS))}")
        if name == "compression.type" and value is not None and value.strip().lower() != "producer":
            raise ConfigError(
                f"compression.type={value!r}: only 'producer' is supported "
                "(batches are stored as the producer compressed them)"
            )
    return kafka_config_changes(configs, base)
