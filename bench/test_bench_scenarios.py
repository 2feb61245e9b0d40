"""Every ``logstore bench`` scenario end to end under pytest-benchmark (``make bench``).

One benchmark per scenario, at the ``--quick`` sizes with one alternation round: the time is the
whole scenario's (logstore and its baselines), and ``extra_info`` carries each figure
(``figures``) and each ratio to its baselines (``ratios``), so two saved runs can be compared
figure by figure, not only by time. A skipped scenario (a missing peer) is a skipped test.
"""

from __future__ import annotations

import dataclasses

import pytest

from logstore.benchmarks.runner import Params, all_scenarios, run_scenarios

SCENARIOS = list(all_scenarios())


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario(benchmark, tmp_path, name):
    benchmark.group = "scenarios"
    params = dataclasses.replace(Params.preset_named("quick"), rounds=1)
    results: dict = {}

    def run():
        results.clear()
        results.update(scenarios={}, figures=[], comparisons=[], skipped=[])
        run_scenarios([name], params, str(tmp_path), results)

    benchmark.pedantic(run, rounds=1, iterations=1)
    status = results["scenarios"][name]
    if status["status"] == "failed":
        pytest.fail(status["traceback"])
    if status["status"] == "skipped":
        pytest.skip(status["reason"])
    benchmark.extra_info["figures"] = {f["id"]: [round(f["value"], 3), f["unit"]] for f in results["figures"]}
    benchmark.extra_info["ratios"] = {
        f"{c['figure']} / {c['baseline']}": None if c["ratio"] is None else round(c["ratio"], 3)
        for c in results["comparisons"]
    }
    benchmark.extra_info["skipped"] = [f"{s['subject']}: {s['reason']}" for s in results["skipped"]]
