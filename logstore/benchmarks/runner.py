"""Running scenarios: sizes, the results being collected, alternation, progress bars.

A scenario is a function ``fn(run: Run) -> None`` registered with :func:`scenario`. It measures
logstore and its baselines with :func:`alternate` and records what it found with
:meth:`Run.figure` (one measured rate), :meth:`Run.compare` (a logstore figure against a baseline
figure of the same run) and :meth:`Run.skip` (a subject that could not be measured, and why).
An exception out of a scenario marks it failed (the run goes on, and exits 1 at the end); a
baseline that raises is only skipped, with the error as the reason.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

MiB = 1024 * 1024


@dataclass(frozen=True)
class Params:
    """How much each scenario does. Presets: ``tiny`` (tests), ``quick`` (about a minute), ``full``."""

    preset: str
    record_bytes: tuple[int, ...] = (100, 1024, 10240)
    bytes_per_size: int = 64 * MiB  #: payload per record size, for append and read
    max_records: int = 300_000  #: cap on records per size (small records are slow in every subject)
    rounds: int = 3  #: alternations per scenario; the best of each subject is kept
    lookup_records: int = 200_000
    lookups: int = 20_000
    open_segments: int = 2_000
    tail_bytes: int = 256 * MiB  #: unflushed tail for the unclean-recovery scenario
    fetch_bytes: int = 1024 * MiB  #: partition size streamed per fetch pass (the issue: 1 GiB)
    fetch_request_bytes: int = 8 * MiB  #: partition_max_bytes of each Fetch (and nginx Range)
    client_bytes: int = 64 * MiB  #: produced and consumed per record size with confluent-kafka
    client_max_records: int = 300_000
    compaction_bytes: int = 64 * MiB  #: log size per record size for the compaction scenario

    @classmethod
    def preset_named(cls, name: str, **overrides) -> Params:
        presets = {
            "tiny": dict(bytes_per_size=256 * 1024, max_records=2_000, rounds=1, lookup_records=2_000,
                         lookups=500, open_segments=20, tail_bytes=2 * MiB, fetch_bytes=4 * MiB,
                         fetch_request_bytes=MiB, client_bytes=64 * 1024, client_max_records=300,
                         compaction_bytes=256 * 1024),
            "quick": dict(bytes_per_size=64 * MiB, max_records=300_000, rounds=3, lookup_records=100_000,
                          lookups=10_000, open_segments=2_000, tail_bytes=128 * MiB, fetch_bytes=256 * MiB,
                          client_bytes=32 * MiB, client_max_records=300_000, compaction_bytes=16 * MiB),
            "full": {},
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; known: {', '.join(presets)}")
        values = {**presets[name], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(preset=name, **values)

    def records_for(self, record_bytes: int, total_bytes: int | None = None) -> int:
        """How many records of ``record_bytes`` a scenario writes (at least one batch's worth)."""
        total = self.bytes_per_size if total_bytes is None else total_bytes
        return max(1, min(self.max_records, total // record_bytes))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Scenario:
    name: str
    title: str
    fn: Callable
    steps: Callable  #: ``steps(params) -> int``: measurements it makes (for the progress bar)


SCENARIOS: dict[str, Scenario] = {}

#: The run order (and the names ``--scenario`` accepts, without importing the scenario modules).
SCENARIO_ORDER = ("append", "append_batches", "read", "lookup", "open", "fetch", "clients", "recovery", "compaction")


def scenario(name: str, title: str, steps: Callable = lambda p: 1):
    """Register ``fn(run)`` as the scenario ``name`` (run in the order of :data:`SCENARIO_ORDER`)."""

    def register(fn):
        SCENARIOS[name] = Scenario(name, title, fn, steps)
        return fn

    return register


def all_scenarios() -> dict[str, Scenario]:
    """Every scenario, in run order (importing the modules that register them)."""
    from . import cleaning, network, scenarios  # noqa: F401  (registration happens at import)

    return {name: SCENARIOS[name] for name in SCENARIO_ORDER if name in SCENARIOS} | SCENARIOS


class Progress:
    """One plain-text progress bar per scenario on ``stream`` (stderr).

    On a terminal the bar is redrawn in place; otherwise one line is printed when the scenario
    ends, so logs do not fill with carriage returns.
    """

    WIDTH = 24

    def __init__(self, name: str, total: int, stream=None):
        self.name, self.total, self.done = name, max(1, total), 0
        self.stream = stream if stream is not None else sys.stderr
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.monotonic()
        self.detail = ""
        self._draw()

    def step(self, detail: str = "") -> None:
        self.done = min(self.total, self.done + 1)
        self.detail = detail
        self._draw()

    def _line(self, status: str | None = None) -> str:
        filled = self.WIDTH * self.done // self.total
        bar = "#" * filled + "." * (self.WIDTH - filled)
        tail = status or self.detail
        return f"{self.name:15} [{bar}] {self.done:3}/{self.total:<3} {time.monotonic() - self.start:5.1f}s {tail}"

    def _draw(self) -> None:
        if self.live:
            self.stream.write("\r\x1b[K" + self._line()[:150])
            self.stream.flush()

    def finish(self, status: str) -> None:
        self.done = self.total if status == "ok" else self.done
        line = self._line(status)
        self.stream.write(("\r\x1b[K" if self.live else "") + line + "\n")
        self.stream.flush()


@dataclass
class Run:
    """What one scenario records into the shared results; ``workdir`` is its own scratch directory."""

    name: str
    params: Params
    workdir: str
    results: dict
    progress: Progress | None = None
    figure_ids: list[str] = field(default_factory=list)

    def step(self, detail: str = "") -> None:
        if self.progress is not None:
            self.progress.step(detail)

    def path(self, *parts: str) -> str:
        return os.path.join(self.workdir, *parts)

    def figure(self, subject: str, value: float, unit: str, *, label: str, kind: str,
               record_bytes: int | None = None, metric: str | None = None, samples=(), **extra) -> str:
        """Record one measured rate (higher is better); returns its id.

        ``kind``: ``logstore``, ``limit`` (raw machine limit), ``peer`` (another store or
        server) or ``variant`` (another logstore path, for comparison).
        """
        assert kind in ("logstore", "limit", "peer", "variant"), kind
        parts = [self.name, subject] + ([metric] if metric else []) + ([f"{record_bytes}B"] if record_bytes else [])
        figure_id = ".".join(parts)
        self.results["figures"].append({
            "id": figure_id, "scenario": self.name, "subject": subject, "metric": metric or "throughput",
            "kind": kind, "label": label, "record_bytes": record_bytes, "value": value, "unit": unit,
            "samples": [round(s, 6) for s in samples], "extra": extra,
        })
        self.figure_ids.append(figure_id)
        return figure_id

    def compare(self, figure_id: str, baseline_id: str) -> None:
        """``ratio = figure / baseline``: both rates of this run (>1: the figure is faster)."""
        values = {f["id"]: f["value"] for f in self.results["figures"]}
        if figure_id not in values or baseline_id not in values:
            return  # one of them was skipped: the skip is already recorded
        baseline = values[baseline_id]
        ratio = values[figure_id] / baseline if baseline else None
        self.results["comparisons"].append({"figure": figure_id, "baseline": baseline_id, "ratio": ratio})

    def skip(self, subject: str, reason: str) -> None:
        entry = {"scenario": self.name, "subject": subject, "reason": reason}
        if entry not in self.results["skipped"]:
            self.results["skipped"].append(entry)

    def optional_module(self, module: str, subject: str, package: str | None = None):
        """Import an optional peer's module, or record the subject as skipped and return None."""
        import importlib

        try:
            return importlib.import_module(module)
        except ImportError:
            self.skip(subject, f"{package or module} is not installed (pip install 'logstore[bench]')")
            return None


def alternate(run: Run, subjects: dict[str, Callable], *, rounds: int | None = None, detail: str = "") -> dict[str, list[float]]:
    """Measure each subject ``rounds`` times in turn (a, b, c, a, b, c, ...).

    Each callable returns ``(units, seconds)``; the result maps each subject to its rates
    (``units / seconds``), one per round. A subject whose name does not start with ``logstore``
    is a baseline: if it raises it is dropped and recorded as skipped; a logstore subject that
    raises fails the scenario.
    """
    rates: dict[str, list[float]] = {name: [] for name in subjects}
    live = dict(subjects)
    for _ in range(rounds or run.params.rounds):
        for name, fn in list(live.items()):
            try:
                units, seconds = fn()
            except Exception as error:
                if name.startswith("logstore"):
                    raise
                where = f" ({detail})" if detail else ""
                run.skip(name, f"failed{where}: {type(error).__name__}: {error}")
                del live[name], rates[name]
                continue
            rates[name].append(units / max(seconds, 1e-9))
            run.step(f"{name} {detail}".strip())
    return rates


def run_scenarios(names: list[str], params: Params, data_dir: str, results: dict, stream=None) -> list[str]:
    """Run the named scenarios into ``results``; returns the names of those that failed."""
    registry = all_scenarios()
    failed = []
    for name in names:
        entry = registry[name]
        workdir = os.path.join(data_dir, name)
        shutil.rmtree(workdir, ignore_errors=True)
        os.makedirs(workdir)
        progress = Progress(name, entry.steps(params), stream)
        run = Run(name, params, workdir, results, progress)
        start = time.monotonic()
        status: dict = {"title": entry.title}
        try:
            entry.fn(run)
            skipped = [s for s in results["skipped"] if s["scenario"] == name and s["subject"] == "*"]
            status["status"] = "skipped" if skipped else "ok"
            if skipped:
                status["reason"] = skipped[0]["reason"]
        except Exception as error:
            failed.append(name)
            status.update(status="failed", error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        status["seconds"] = round(time.monotonic() - start, 3)
        status["figures"] = run.figure_ids
        results["scenarios"][name] = status
        progress.finish(status["status"] if status["status"] != "failed" else f"FAILED: {status['error']}"[:120])
    return failed
