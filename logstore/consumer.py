"""A small embedded consumer: read topics of a :class:`~logstore.store.LogStore` in-process and keep
the position in the store's committed offsets, as a Kafka consumer group would.

    with GroupConsumer(store, "billing", ["orders"]) as consumer:
        for record in consumer.poll(timeout_s=1.0):
            handle(record)
        consumer.commit()

It is *not* a member of a group in the Kafka sense: there is no coordinator in-process, so it
reads every partition of its topics. Run one per group (or give each its own topics); network
clients that need partitions shared between members use the server's group protocol. A
``GroupConsumer`` and network consumers of the same group share committed offsets, but the
coordinator does not know about the embedded one (its commits use generation -1, which the
server also accepts from consumers that assign partitions themselves).

Reads stop at each partition's high watermark, so with ``durability="append"`` only fsynced
records are returned. A position that fell below the log start (retention) or beyond the log end
restarts at ``start`` ("earliest" or "latest"), as Kafka's ``auto.offset.reset``.
Not thread-safe: one thread polls and commits.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import NamedTuple

from .errors import OffsetOutOfRangeError

__all__ = ["GroupConsumer", "ConsumerRecord"]

_WAIT_SLICE_S = 0.05


class ConsumerRecord(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple


class GroupConsumer:
    """Consume ``topics`` of ``store`` as ``group``; see the module docstring.

    Each partition starts at the group's committed offset, else at ``start``: ``"earliest"``
    (the log start) or ``"latest"`` (the high watermark). ``max_bytes`` bounds one partition's
    read per poll (at least one batch is always read).
    """

    def __init__(self, store, group: str, topics: Iterable[str], *, start: str = "earliest", max_bytes: int = 1 << 20):
        if start not in ("earliest", "latest"):
            raise ValueError(f"start must be 'earliest' or 'latest', got {start!r}")
        self.store = store
        self.group = group
        self.start = start
        self.max_bytes = max_bytes
        self._partitions = [
            (topic, p) for topic in dict.fromkeys(topics) for p in range(store.describe_topic(topic).partitions)
        ]
        if not self._partitions:
            raise ValueError("give at least one topic")
        committed = store.fetch_offsets(group, self._partitions)
        self._positions = {
            tp: committed[tp].offset if tp in committed else self._reset(*tp) for tp in self._partitions
        }
        self._committed = {tp: committed[tp].offset for tp in committed}
        self._next = 0  # round-robin start, so one busy partition cannot starve the others

    def _reset(self, topic: str, partition: int) -> int:
        log = self.store.log(topic, partition)
        return log.log_start_offset if self.start == "earliest" else log.high_watermark

    @property
    def assignment(self) -> list[tuple[str, int]]:
        return list(self._partitions)

    def position(self, topic: str, partition: int) -> int:
        """The offset of the next record :meth:`poll` returns from this partition."""
        return self._positions[(topic, partition)]

    def seek(self, topic: str, partition: int, offset: int) -> None:
        if (topic, partition) not in self._positions:
            raise KeyError(f"{topic}-{partition} is not consumed here")
        self._positions[(topic, partition)] = offset

    def poll(self, *, max_records: int = 500, timeout_s: float = 0.0) -> list[ConsumerRecord]:
        """Up to ``max_records`` records, waiting up to ``timeout_s`` for the first one."""
        deadline = time.monotonic() + timeout_s
        while True:
            records = self._read(max_records)
            remaining = deadline - time.monotonic()
            if records or remaining <= 0:
                return records
            topic, partition = self._partitions[self._next % len(self._partitions)]
            # wake early on an append there; other partitions are looked at every slice
            self.store.log(topic, partition).wait_for_append(
                self._positions[(topic, partition)], min(remaining, _WAIT_SLICE_S)
            )

    def _read(self, max_records: int) -> list[ConsumerRecord]:
        out: list[ConsumerRecord] = []
        count = len(self._partitions)
        for i in range(count):
            if len(out) >= max_records:
                break
            topic, partition = tp = self._partitions[(self._next + i) % count]
            log = self.store.log(topic, partition)
            try:
                records = log.read(self._positions[tp], max_bytes=self.max_bytes, max_offset=log.high_watermark)
            except OffsetOutOfRangeError:
                self._positions[tp] = self._reset(topic, partition)
                continue
            records = records[: max_records - len(out)]
            if records:
                out.extend(
                    ConsumerRecord(topic, partition, r.offset, r.timestamp_ms, r.key, r.value, tuple(r.headers))
                    for r in records
                )
                self._positions[tp] = records[-1].offset + 1
        self._next += 1
        return out

    def commit(self) -> None:
        """Commit the current positions (of partitions that moved since the last commit), all
        in one batch; durable as the store's durability mode promises."""
        moved = {tp: offset for tp, offset in self._positions.items() if self._committed.get(tp) != offset}
        if moved:
            self.store.commit_offsets(self.group, moved)
            self._committed.update(moved)

    def committed(self) -> dict[tuple[str, int], int]:
        """The group's committed offsets of these partitions (as stored now)."""
        return {tp: value.offset for tp, value in self.store.fetch_offsets(self.group, self._partitions).items()}

    def close(self, *, commit: bool = False) -> None:
        if commit:
            self.commit()

    def __enter__(self) -> GroupConsumer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
