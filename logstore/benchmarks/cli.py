"""``logstore bench``: run the benchmark scenarios and write ``<out>/<timestamp>/``.

    logstore bench [--quick | --tiny] [--scenario NAME ...] [--record-bytes 100,1024,10240]
                   [--data DIR] [--out DIR]

Prints the results table on stdout (progress bars on stderr), and writes ``results.json`` and
``throughput.png`` (the plot) into a new ``<out>/<timestamp>/`` directory. Scratch files go in a
fresh ``DIR/logstore-bench-<pid>/`` removed at the end: use a directory on the disk you care about
(a tmpfs measures memory). Exit status: 0 when every scenario ran (or was skipped, with the
reason printed); 1 when a scenario failed; never because a number is low. Also runnable as
``python -m logstore.benchmarks.cli``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys

from . import SCHEMA
from .report import REFERENCES, format_table, machine_facts, write_json, write_plot
from .runner import SCENARIO_ORDER as _SCENARIO_NAMES
from .runner import Params, all_scenarios, run_scenarios


def _record_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes in bytes separated by commas, got {text!r}") from None
    if not sizes or any(not 1 <= size <= 1_000_000 for size in sizes):
        raise argparse.ArgumentTypeError(f"each record size must be 1..1000000 bytes, got {text!r}")
    return tuple(sorted(set(sizes)))


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark logstore beside the machine's limits and its peers",
        description="Run the benchmark scenarios: every logstore figure is printed next to baselines "
        "measured in the same run (raw disk, a naive file, LMDB, SQLite WAL, nginx) and the ratio. "
        "Writes results.json and a plot into OUT/<timestamp>/. Exits 1 only if a scenario fails.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller sizes: about a minute")
    size.add_argument("--tiny", action="store_true", help="a few seconds per scenario, to check the setup "
                      "(numbers meaningless)")
    parser.add_argument("--scenario", dest="scenarios", action="extend", nargs="+", choices=_SCENARIO_NAMES,
                        metavar="NAME", help=f"run only these (default: all): {', '.join(_SCENARIO_NAMES)}")
    parser.add_argument("--record-bytes", type=_record_sizes, default=None, metavar="N,N,...",
                        help="record sizes for the by-size scenarios (default 100,1024,10240)")
    parser.add_argument("--data", default="data", metavar="DIR",
                        help="where scratch files go (default ./data; removed afterwards)")
    parser.add_argument("--out", default="bench-results", metavar="DIR", help="results directory (default bench-results)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    preset = "tiny" if args.tiny else "quick" if args.quick else "full"
    params = Params.preset_named(preset, record_bytes=args.record_bytes)
    registry = all_scenarios()
    names = [name for name in registry if not args.scenarios or name in args.scenarios]
    os.makedirs(args.data, exist_ok=True)
    scratch = os.path.join(os.path.abspath(args.data), f"logstore-bench-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    now = datetime.datetime.now(datetime.UTC)
    out = base_out = os.path.join(args.out, now.strftime("%Y%m%d-%H%M%S"))
    for n in range(2, 100):  # two runs in the same second keep both results
        if not os.path.exists(out):
            break
        out = f"{base_out}-{n}"
    results = {
        "schema": SCHEMA,
        "started": now.isoformat(timespec="seconds"),
        "argv": sys.argv,
        "params": params.to_dict(),
        "machine": machine_facts(scratch),
        "scenarios": {},
        "figures": [],
        "comparisons": [],
        "skipped": [],
        "references": REFERENCES,
        "plot": None,
        "plot_skipped": None,
    }
    if results["machine"]["filesystem"] in ("tmpfs", "ramfs"):
        print(f"logstore bench: note: {args.data} is on {results['machine']['filesystem']}: "
              "the disk figures measure memory", file=sys.stderr)
    try:
        failed = run_scenarios(names, params, scratch, results)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(out, exist_ok=True)
    plot = os.path.join(out, "throughput.png")
    try:
        results["plot_skipped"] = write_plot(results, plot)
    except Exception as error:  # a plot problem must not lose the numbers
        results["plot_skipped"] = f"the plot failed: {type(error).__name__}: {error}"
    if results["plot_skipped"] is None:
        results["plot"] = plot
    write_json(results, os.path.join(out, "results.json"))
    print(format_table(results))
    print(f"\nresults: {os.path.join(out, 'results.json')}" + (f"\nplot: {plot}" if results["plot"] else ""))
    if failed:
        print(f"logstore bench: failed scenarios: {', '.join(failed)} (tracebacks in results.json)", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="logstore")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
