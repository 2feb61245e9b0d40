"""Reporting a run: machine facts, the results table, ``results.json`` and the plot.

``results.json`` (``schema`` = :data:`logstore.benchmarks.SCHEMA`)::

    schema, started (ISO 8601, UTC), argv, params (see runner.Params), machine (see machine_facts)
    scenarios   {name: {title, status: ok|skipped|failed, seconds, figures: [id], reason?, error?, traceback?}}
    figures     [{id, scenario, subject, metric, kind: logstore|limit|peer|variant, label,
                  record_bytes (or null), value (best of the samples), unit, samples, extra}]
    comparisons [{figure: id, baseline: id, ratio: figure value / baseline value}]
    skipped     [{scenario, subject ("*": the whole scenario), reason}]
    references  published figures for context (never used in a ratio: other machines)
    plot        path of the PNG, or null with plot_skipped giving the reason

Every figure is a rate (higher is better) and every ratio divides two figures of this run.
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
from importlib import metadata

#: Published numbers to read ours against; other machines, so never a ratio.
REFERENCES = [
    {"what": "Kafka, 1 producer, 100 B records, no replication", "value": 821_557, "unit": "records/s",
     "source": "LinkedIn 2014, Benchmarking Apache Kafka: 2 Million Writes Per Second (On Three Cheap Machines)"},
]

_PACKAGES = ("logstore", "numpy", "crc32c", "zstandard", "lmdb", "confluent-kafka", "kafka-python", "matplotlib")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def filesystem_of(path: str) -> str | None:
    """The filesystem type of the mount holding ``path`` (from /proc/mounts), or None."""
    try:
        with open("/proc/mounts") as f:
            mounts = [line.split() for line in f if len(line.split()) >= 3]
    except OSError:
        return None
    real = os.path.realpath(path)
    best = max((m for m in mounts if real == m[1] or real.startswith(m[1].rstrip("/") + "/")),
               key=lambda m: len(m[1]), default=None)
    return best[2] if best else None


def machine_facts(data_dir: str) -> dict:
    facts = {
        "cpus": os.cpu_count(),
        "cpu_model": None,
        "kernel": platform.release(),
        "filesystem": filesystem_of(data_dir),
        "data_dir": os.path.abspath(data_dir),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "packages": {name: _version(name) for name in _PACKAGES},
    }
    try:
        with open("/proc/cpuinfo") as f:
            facts["cpu_model"] = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    from .baselines import nginx_binary

    facts["nginx"] = nginx_binary()
    try:
        import confluent_kafka

        facts["librdkafka"] = confluent_kafka.libversion()[0]
    except ImportError:
        facts["librdkafka"] = None
    return facts


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}" if value >= 1 else f"{value:.3g}"


def format_table(results: dict) -> str:
    """The text table: header with machine facts, then per scenario each logstore figure with
    each of its baselines (value and ratio), then skips and failures."""
    machine = results["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v)
    lines = [
        f"logstore bench ({results['params']['preset']}), {results['started']}",
        f"machine: {machine['cpus']} CPUs ({machine['cpu_model'] or 'unknown model'}), kernel {machine['kernel']}, "
        f"{machine['filesystem'] or 'unknown'} at {machine['data_dir']}, load {machine['load_average']}",
        f"software: Python {machine['python']}, SQLite {machine['sqlite']}, librdkafka {machine['librdkafka'] or '-'}, "
        f"nginx {'yes' if machine['nginx'] else 'no'}; {packages}",
        "ratio = logstore / baseline, both measured in this run (every figure is a rate: > 1 means logstore is faster)",
        "",
    ]
    figures = {f["id"]: f for f in results["figures"]}
    by_figure: dict[str, list[dict]] = {}
    for comparison in results["comparisons"]:
        by_figure.setdefault(comparison["figure"], []).append(comparison)
    header = f"{'scenario':15} {'logstore figure':38} {'value':>16}  {'baseline':36} {'value':>16} {'ratio':>6}"
    lines += [header, "-" * len(header)]
    for name, scenario in results["scenarios"].items():
        shown = False
        for figure_id in scenario.get("figures", []):
            figure = figures[figure_id]
            if figure["kind"] not in ("logstore", "variant") or figure_id not in by_figure:
                continue
            what = figure["label"] + (f" {figure['record_bytes']} B" if figure["record_bytes"] else "")
            if figure["metric"] != "throughput":
                what += f" [{figure['metric']}]"
            value = f"{_number(figure['value'])} {figure['unit']}"
            for i, comparison in enumerate(by_figure[figure_id]):
                baseline = figures[comparison["baseline"]]
                ratio = "-" if comparison["ratio"] is None else f"{comparison['ratio']:.2f}"
                lines.append(
                    f"{name if not shown else '':15} {what if i == 0 else '':38} {value if i == 0 else '':>16}  "
                    f"{baseline['label'][:36]:36} {_number(baseline['value']) + ' ' + baseline['unit']:>16} {ratio:>6}"
                )
                shown = True
        if not shown:
            status = scenario["status"]
            detail = scenario.get("reason") or scenario.get("error") or "no comparisons"
            lines.append(f"{name:15} {status.upper()}: {detail}"[:160])
    lines.append("")
    for skip in results["skipped"]:
        if skip["subject"] != "*":
            lines.append(f"skipped: {skip['scenario']}/{skip['subject']}: {skip['reason']}")
    if results.get("plot_skipped"):
        lines.append(f"skipped: plot: {results['plot_skipped']}")
    for reference in results.get("references", []):
        lines.append(f"for context (published, another machine): {reference['what']}: "
                     f"{reference['value']:,} {reference['unit']} ({reference['source']})")
    return "\n".join(lines)


def write_json(results: dict, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


#: Panels of the plot: (scenario, title); limits are drawn dashed, logstore thick, variants dotted.
_COLORS = {  # the same subject has the same colour in every panel
    "logstore": "tab:blue", "logstore_records": "tab:cyan", "logstore_1mib": "tab:blue", "logstore_produce": "tab:blue",
    "logstore_consume": "tab:cyan", "logstore_embedded": "tab:gray", "logstore_embedded_read": "tab:olive",
    "raw_write": "black", "raw_read": "black", "copy_segments": "black", "dict_rewrite": "tab:red", "naive": "tab:orange", "lmdb": "tab:purple", "sqlite": "tab:green",
}

PLOT_PANELS = (("append", "append"), ("read", "sequential read"), ("clients", "Kafka clients via the server"),
               ("compaction", "compaction (10 writes per key)"))


def write_plot(results: dict, path: str) -> str | None:
    """Throughput by record size, one panel per scenario; returns None, or why it was skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'logstore[bench]')"
    panels = []
    for scenario, title in PLOT_PANELS:
        series: dict[str, list[tuple[int, float, dict]]] = {}
        for figure in results["figures"]:
            if figure["scenario"] == scenario and figure["record_bytes"] and figure["metric"] == "throughput":
                series.setdefault(figure["subject"], []).append((figure["record_bytes"], figure["value"], figure))
        if series:
            panels.append((title, series))
    if not panels:
        return "no throughput-by-record-size figures in this run"
    columns = min(2, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.0 * columns, 4.2 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (title, series) in zip(axes.flat, panels, strict=False):
        for _subject, points in sorted(series.items(), key=lambda item: item[1][0][2]["kind"] != "logstore"):
            points.sort()
            figure = points[0][2]
            style = {"logstore": dict(lw=2.5, marker="o"), "variant": dict(lw=1.5, marker="o", ls=":"),
                     "limit": dict(lw=1.5, ls="--"), "peer": dict(lw=1, marker="s")}[figure["kind"]]
            style["color"] = _COLORS.get(figure["subject"], "tab:gray")
            ax.plot([p[0] for p in points], [p[1] for p in points], label=figure["label"], **style)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("record size (bytes)")
        ax.set_ylabel("payload MB/s")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    machine = results["machine"]
    fig.suptitle(f"logstore bench {results['started']}: {machine['cpus']} CPUs, {machine['filesystem']}, "
                 f"kernel {machine['kernel']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
