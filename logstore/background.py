"""The only module that starts threads: the store's timer.

Every ``tick_ms`` it asks each partition log to roll if its active segment is older than
``segment_ms`` (so an idle partition still rolls, unlike Kafka where only an append can) and to
fsync if ``flush_ms`` passed (``durability="interval"``). A failure in one log is logged and does
not stop the others or the thread. ``stop()`` wakes the thread and joins it promptly.
"""

from __future__ import annotations

import logging
import threading

__all__ = ["Background"]

logger = logging.getLogger("logstore.background")


class Background:
    def __init__(self, store, *, tick_ms: int = 200):
        self._store = store
        self._tick_s = tick_ms / 1000
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="logstore-background", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)

    def tick(self) -> None:
        """One round over every log (also callable directly, e.g. from tests)."""
        for topic, partition, log in self._store.logs():
            if self._stop.is_set():
                return
            try:
                log.maybe_roll()
                log.maybe_flush()
            except Exception:  # one bad partition must not stop the others
                if not log.closed:
                    logger.exception("background work failed for %s-%d", topic, partition)

    def _run(self) -> None:
        while not self._stop.wait(self._tick_s):
            self.tick()
