"""Fetch (v4-11): which file regions answer a fetch, and the long poll.

Each requested partition becomes a ``Log.read_slice`` below the high watermark: a region of one
segment file that the server sends with ``os.sendfile`` (no record byte is read here). The
response holds every requested partition, in request order, so kafka-python's fetch-session
bookkeeping never resets (we never create sessions: ``session_id`` is always 0).

Size limits (Kafka's ``ReplicaManager.readFromLog`` with KIP-74): each partition reads at most
``min(partition_max_bytes, what is left of max_bytes)``, except that the first non-empty
partition always returns its first whole batch, however large; a later partition whose first
batch does not fit returns no records and is asked for again.

Long poll: while fewer than ``min_bytes`` are ready and no partition has an error, the handler
thread waits on ``AppendSignal`` (notified after every Produce the server handles), re-checking
the high watermarks at least every ``poll_s`` so appends made directly on the store (an
embedding application) are noticed too, and never beyond ``max_wait`` (capped at ``max_wait_s``).
Regions are taken only when answering, so nothing is held open while waiting.
"""

from __future__ import annotations

import threading
import time

from logstore.errors import LogClosedError, OffsetOutOfRangeError, TopicError
from logstore.server.fetch_response import FetchPartition, encode_fetch_response_parts

__all__ = ["AppendSignal", "Fetcher"]

NONE = 0
OFFSET_OUT_OF_RANGE = 1
UNKNOWN_TOPIC_OR_PARTITION = 3
NOT_LEADER_OR_FOLLOWER = 6
FETCH_SESSION_ID_NOT_FOUND = 70


class AppendSignal:
    """A generation counter and condition: ``notify()`` after appending wakes every waiter."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._generation = 0
        self._closed = False

    @property
    def generation(self) -> int:
        with self._cond:
            return self._generation

    @property
    def closed(self) -> bool:
        return self._closed

    def notify(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiter for good (server shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wait(self, generation: int, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` unless the generation already moved past ``generation``;
        returns the current generation."""
        with self._cond:
            if self._generation == generation and not self._closed:
                self._cond.wait(timeout_s)
            return self._generation


class Fetcher:
    """Answers Fetch requests from ``store`` (see the module docstring)."""

    def __init__(self, store, appends: AppendSignal, *, poll_s: float = 0.1, max_wait_s: float = 30.0):
        self.store = store
        self.appends = appends
        self.poll_s = poll_s
        self.max_wait_s = max_wait_s

    def fetch(self, request) -> list:
        """The response parts (``bytes`` and regions) for a decoded Fetch ``request``."""
        body, version = request.body, request.api_version
        if version >= 7 and body.session_id != 0:
            # we never create fetch sessions (every response has session_id 0)
            return encode_fetch_response_parts(request.correlation_id, version, 0, FETCH_SESSION_ID_NOT_FOUND, 0, [])
        wanted = [
            (t.topic, [(p.partition, p.fetch_offset, p.partition_max_bytes) for p in t.partitions])
            for t in body.topics
        ]
        wait_s = min(max(body.max_wait.total_seconds(), 0.0), self.max_wait_s)
        deadline = time.monotonic() + wait_s
        while True:
            generation = self.appends.generation
            topics, ready_bytes, has_error, watermarks = self.read(wanted, body.max_bytes)
            if has_error or ready_bytes >= body.min_bytes or self.appends.closed:
                break
            if not self._wait_for_data(wanted, watermarks, generation, deadline):
                break  # max_wait passed: answer with what the last read found
        return encode_fetch_response_parts(request.correlation_id, version, 0, NONE, 0, topics)

    def read(self, wanted, max_bytes: int):
        """``(topics, record bytes, whether any partition has an error, high watermarks read)``.

        ``wanted`` is ``[(topic, [(partition, fetch_offset, partition_max_bytes), ...]), ...]``;
        ``topics`` is what ``encode_fetch_response_parts`` takes.
        """
        remaining = max_bytes
        got_records = False
        total = 0
        has_error = False
        topics = []
        watermarks = []
        for name, partitions in wanted:
            out = []
            for partition, offset, partition_max_bytes in partitions:
                try:
                    log = self.store.log(name, partition)
                    high_watermark = log.high_watermark
                    log_start = log.log_start_offset
                except (TopicError, LogClosedError):
                    watermarks.append(-1)
                    out.append(FetchPartition(partition, error_code=UNKNOWN_TOPIC_OR_PARTITION))
                    has_error = True
                    continue
                watermarks.append(high_watermark)
                limit = max(min(partition_max_bytes, remaining), 0)
                error = NONE
                try:
                    region = log.read_slice(offset, max_bytes=limit, max_offset=high_watermark)
                except OffsetOutOfRangeError:
                    error, region, has_error = OFFSET_OUT_OF_RANGE, None, True
                except LogClosedError:
                    error, region, has_error = NOT_LEADER_OR_FOLLOWER, None, True
                if region is not None and region.size:
                    if got_records and region.size > limit:
                        region = None  # only the first non-empty partition may exceed its limits
                    else:
                        got_records = True
                        remaining -= region.size
                        total += region.size
                out.append(
                    FetchPartition(
                        partition,
                        error_code=error,
                        high_watermark=high_watermark,
                        last_stable_offset=high_watermark,
                        log_start_offset=log_start,
                        records=region if region is not None and region.size else b"",
                    )
                )
            topics.append((name, out))
        return topics, total, has_error, watermarks

    def _watermarks(self, wanted) -> list[int]:
        marks = []
        for name, partitions in wanted:
            for partition, _offset, _max in partitions:
                try:
                    marks.append(self.store.log(name, partition).high_watermark)
                except (TopicError, LogClosedError):
                    marks.append(-1)
        return marks

    def _wait_for_data(self, wanted, watermarks: list[int], generation: int, deadline: float) -> bool:
        """Wait until a high watermark moves (True) or ``deadline`` passes (False).

        Every wait is bounded by ``poll_s``, so no thread is held past the deadline and appends
        that bypass the server are seen within one tick.
        """
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            generation = self.appends.wait(generation, min(remaining, self.poll_s))
            if self.appends.closed or self._watermarks(wanted) != watermarks:
                return True
