"""``logstore bench``: logstore's throughput beside the machine's limits and its peers, in one run.

Every logstore figure is printed next to baselines measured in the same run, on the same disk,
and the ratio between them (``value / baseline``; every figure is a rate, so a ratio above 1
means logstore was faster). On a shared, noisy machine only the ratios mean much; inside a
scenario the subjects are measured in alternation (a, b, a, b, ...), and the best of each is
kept, so a noisy neighbour or the kernel's writeback hits all of them alike.

Modules:

* :mod:`.baselines`: the limits (raw sequential write and read of the same bytes), a naive
  length-prefixed file, and the peers (LMDB, SQLite WAL, nginx serving a file with sendfile).
* :mod:`.runner`: sizes (``Params``), the scenario registry, alternation, progress bars.
* :mod:`.scenarios`: the storage scenarios (append, read back, lookups, open, recovery);
  :mod:`.network`: fetch through the server, Kafka clients; :mod:`.cleaning`: compaction.
* :mod:`.report`: machine facts, the results table, ``results.json`` (schema there) and the plot.
* :mod:`.cli`: ``logstore bench`` (``add_parser`` / ``run``).

Optional packages (``pip install logstore[bench]``: lmdb, matplotlib, confluent-kafka) and the
nginx binary are imported or looked up only inside the scenario that needs them; a missing one is
reported as skipped, with the reason, never silently dropped.
"""

from __future__ import annotations

__all__ = ["SCHEMA"]

#: ``results.json``'s ``schema`` field; bump when a field changes meaning.
SCHEMA = "logstore-bench/1"
