"""The only module that starts threads: the store's timer and its cleaner.

Every ``tick_ms`` it asks each partition log to roll if its active segment is older than
``segment_ms`` (so an idle partition still rolls, unlike Kafka where only an append can), to
fsync if ``flush_ms`` passed (``durability="interval"``) and to unlink ``*.deleted`` files whose
delay is over. Every ``retention_check_interval_ms`` it plans retention for each log whose
cleanup policy includes ``delete`` (:func:`logstore.retention.plan_retention`, a pure function)
and hands the plan to :meth:`Log.delete_segments`. A failure in one log is logged and does not
stop the others or the thread.

The cleaner thread runs apart from the timer (a compaction pass over a large log takes seconds
and must not hold up rolls and flushes): every ``cleaner_backoff_ms`` it offers each log whose
cleanup policy includes ``compact`` (``__consumer_offsets`` too) one pass of
:func:`logstore.cleaner.clean_log`, which cleans only logs that are due and marks a failing log
uncleanable (``stats.uncleanable``) without stopping the others.

``stop()`` wakes both threads and joins them (a pass in progress finishes first, up to 30 s).
"""

from __future__ import annotations

import logging
import threading
import time

from .retention import plan_retention

__all__ = ["Background"]

logger = logging.getLogger("logstore.background")


class Background:
    def __init__(
        self,
        store,
        *,
        tick_ms: int = 200,
        retention_check_interval_ms: int = 300_000,
        cleaner_backoff_ms: int = 15_000,
        cleaner_memory_budget_bytes: int = 128 * 1024 * 1024,
        clock_ms=None,
    ):
        from .cleaner import CleanerCheckpoint, CleanerStats

        self._store = store
        self._cleaner_backoff_s = cleaner_backoff_ms / 1000
        self._cleaner_budget = cleaner_memory_budget_bytes
        self._cleaner_checkpoint = CleanerCheckpoint()
        self.cleaner_stats = CleanerStats()
        self._tick_s = tick_ms / 1000
        self._retention_interval_ms = retention_check_interval_ms
        self._clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self._next_retention_ms = self._clock_ms() + min(retention_check_interval_ms, 30_000)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="logstore-background", daemon=True)
        self._cleaner = threading.Thread(target=self._run_cleaner, name="logstore-cleaner", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._cleaner.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in (self._thread, self._cleaner):
            if thread.is_alive() and threading.current_thread() is not thread:
                thread.join(timeout=30)

    def clean(self, now_ms: int | None = None) -> list:
        """One cleaner round over every compacted log (also callable directly, e.g. from tests)."""
        from .cleaner import clean_log

        now_ms = self._clock_ms() if now_ms is None else now_ms
        results = []
        for _topic, _partition, log in self._store.logs():
            if self._stop.is_set():
                break
            if "compact" not in log.config.cleanup_policy.split(",") or log.closed:
                continue
            result = clean_log(
                log,
                now_ms=now_ms,
                memory_budget_bytes=self._cleaner_budget,
                checkpoint=self._cleaner_checkpoint,
                stats=self.cleaner_stats,
            )
            if result.status == "cleaned":
                logger.info("compacted %s: %s", log.directory, result)
            elif result.status == "failed":  # logged once; later rounds skip it as "uncleanable"
                logger.warning("cannot compact %s: %s", log.directory, result.error)
            results.append(result)
        return results

    def _run_cleaner(self) -> None:
        while not self._stop.wait(self._cleaner_backoff_s):
            try:
                self.clean()
            except Exception:  # never let the cleaner thread die
                logger.exception("cleaner round failed")

    def tick(self, now_ms: int | None = None) -> None:
        """One round over every log (also callable directly, e.g. from tests)."""
        now_ms = self._clock_ms() if now_ms is None else now_ms
        check_retention = now_ms >= self._next_retention_ms
        if check_retention:
            self._next_retention_ms = now_ms + self._retention_interval_ms
        for topic, partition, log in self._store.logs():
            if self._stop.is_set():
                return
            try:
                log.maybe_roll()
                log.maybe_flush()
                if check_retention:
                    enforce_retention(log, now_ms)
                log.purge_deleted()
            except Exception:  # one bad partition must not stop the others
                if not log.closed:
                    logger.exception("background work failed for %s-%d", topic, partition)

    def _run(self) -> None:
        while not self._stop.wait(self._tick_s):
            self.tick()


def enforce_retention(log, now_ms: int) -> int:
    """Plan retention for one log and carry the plan out; returns the segments deleted."""
    config = log.config
    if "delete" not in config.cleanup_policy.split(","):
        # compacted-only topics still honour delete_records (the log start offset)
        config = config.replace(retention_ms=None, retention_bytes=None)
    plan = plan_retention(
        log.segment_infos(),
        now_ms=now_ms,
        retention_ms=config.retention_ms,
        retention_bytes=config.retention_bytes,
        log_start_offset=log.log_start_offset,
        high_watermark=log.high_watermark,
    )
    if plan.empty:
        return 0
    deleted = log.delete_segments(plan.base_offsets, now_ms=now_ms)
    if deleted:
        logger.info("retention deleted %d segment(s) of %s (%s)", deleted, log.directory, ",".join(sorted(set(plan.reasons))))
    return deleted
