"""``logstore bench`` at a tiny size: every scenario runs, the JSON has its schema, and every ratio
divides two figures of the same run. No test here asserts a speed."""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys

import pytest

from logstore.benchmarks import SCHEMA, cli
from logstore.benchmarks.runner import SCENARIOS, all_scenarios

FIGURE_KEYS = {"id", "scenario", "subject", "metric", "kind", "label", "record_bytes", "value", "unit", "samples", "extra"}
MACHINE_KEYS = {"cpus", "kernel", "filesystem", "python", "packages", "data_dir", "load_average"}


def bench(tmp_path, *argv) -> tuple[int, dict]:
    out = tmp_path / "out"
    code = cli.main(["--tiny", "--data", str(tmp_path / "data"), "--out", str(out), *argv])
    (run_dir,) = [d for d in out.iterdir() if d.is_dir()]
    with open(run_dir / "results.json") as f:
        return code, json.load(f)


def check_schema(results: dict) -> None:
    assert results["schema"] == SCHEMA
    assert MACHINE_KEYS <= set(results["machine"])
    assert results["params"]["preset"] == "tiny"
    figures = {f["id"]: f for f in results["figures"]}
    assert len(figures) == len(results["figures"]), "figure ids must be unique"
    for figure in figures.values():
        assert set(figure) == FIGURE_KEYS, figure
        assert figure["kind"] in ("logstore", "limit", "peer", "variant")
        assert math.isfinite(figure["value"]) and figure["value"] > 0, figure
        if figure["samples"]:
            # best of the passes; fetch and append_batches report medians (see their docstrings)
            summary = statistics.median if figure["scenario"] in ("fetch", "append_batches") else max
            assert figure["value"] == pytest.approx(summary(figure["samples"]), rel=1e-5)
        assert figure["id"] in results["scenarios"][figure["scenario"]]["figures"]
    for comparison in results["comparisons"]:
        # both sides are figures of this very run, and the ratio is theirs
        figure, baseline = figures[comparison["figure"]], figures[comparison["baseline"]]
        assert figure["scenario"] == baseline["scenario"] and figure["unit"] == baseline["unit"]
        assert figure["kind"] in ("logstore", "variant") and figure["id"] != baseline["id"]
        assert comparison["ratio"] == pytest.approx(figure["value"] / baseline["value"], rel=1e-12)
    for skip in results["skipped"]:
        assert skip["scenario"] in results["scenarios"] and skip["reason"], skip
    for scenario in results["scenarios"].values():
        assert scenario["status"] in ("ok", "skipped", "failed"), scenario
        if scenario["status"] == "skipped":
            assert scenario["reason"]
    assert (results["plot"] is None) != (results["plot_skipped"] is None)


def test_every_scenario_runs_at_a_tiny_size(tmp_path, capsys):
    code, results = bench(tmp_path)
    assert code == 0, {n: s.get("error") for n, s in results["scenarios"].items()}
    check_schema(results)
    assert list(results["scenarios"]) == list(all_scenarios())
    for name, scenario in results["scenarios"].items():
        assert scenario["status"] in ("ok", "skipped")
        if scenario["status"] == "ok":
            assert any(f["kind"] == "logstore" for f in results["figures"] if f["scenario"] == name), name
            assert any(c["figure"].startswith(name + ".") for c in results["comparisons"]), name
    if results["plot"]:
        assert os.path.getsize(results["plot"]) > 1000
    printed = capsys.readouterr()
    assert "ratio" in printed.out and "results: " in printed.out
    assert "[" in printed.err  # the progress bars
    assert not os.listdir(tmp_path / "data"), "scratch files must be removed"


def test_a_failing_scenario_exits_1_and_the_others_still_report(tmp_path, monkeypatch):
    all_scenarios()

    def broken(run):
        raise RuntimeError("boom")

    monkeypatch.setattr(SCENARIOS["open"], "fn", broken)
    code, results = bench(tmp_path, "--scenario", "open", "append_batches")
    assert code == 1
    assert results["scenarios"]["open"]["status"] == "failed"
    assert "boom" in results["scenarios"]["open"]["error"]
    assert results["scenarios"]["append_batches"]["status"] == "ok"
    check_schema(results)


def test_missing_peers_and_plot_are_reported_as_skipped(tmp_path, monkeypatch):
    for module in ("lmdb", "matplotlib", "confluent_kafka"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    code, results = bench(tmp_path, "--scenario", "append", "clients", "--record-bytes", "512")
    assert code == 0
    check_schema(results)
    skipped = {(s["scenario"], s["subject"]): s["reason"] for s in results["skipped"]}
    assert "not installed" in skipped[("append", "lmdb")]
    assert results["scenarios"]["clients"]["status"] == "skipped"
    assert "confluent-kafka" in results["scenarios"]["clients"]["reason"]
    assert "matplotlib" in results["plot_skipped"]
    assert {f["record_bytes"] for f in results["figures"] if f["scenario"] == "append"} == {512}


def test_optional_packages_are_not_imported_with_the_package():
    code = ("import sys, logstore.benchmarks.cli, logstore.benchmarks.runner; logstore.benchmarks.runner.all_scenarios(); "
            "print(sorted(m for m in ('lmdb', 'matplotlib', 'confluent_kafka', 'logstore.server.server') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_command_line_contract():
    parser = argparse.ArgumentParser(prog="logstore")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "--quick", "--scenario", "append", "read", "--record-bytes", "1024,100"])
    assert args.func is cli.run and args.quick and args.scenarios == ["append", "read"]
    assert args.record_bytes == (100, 1024)
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--record-bytes", "ten"])
    assert set(cli._SCENARIO_NAMES) == set(all_scenarios())
