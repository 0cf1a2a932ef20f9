"""`powernet bench sim` on a tiny budget: it runs, prints a table and writes complete, finite JSON, and a
reference solve that gives up is recorded rather than ending the benchmark."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from launch.bench_sim import bench_sim
from simsvc import reference

REQUIRED = ("steps_per_s", "odeint_steps_per_s", "max_err_pu", "steps_per_s_vec", "numpy_steps_per_s",
            "sim_s_per_wall_s", "odeint_max_err_pu")


def test_bench_sim_writes_finite_positive_figures_per_system(tmp_path: Path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(bench_sim, ["--out", str(out), "--system", "microgrid-6", "--episodes", "1",
                                            "--steps", "1", "--n-envs", "2"])
    assert result.exit_code == 0, result.output
    assert "odeint" in result.output and "microgrid-6" in result.output
    doc = json.loads(out.read_text())
    assert doc["machine"]["cpu_count"] >= 1
    figures = doc["microgrid-6"]
    assert figures["n_envs_vec"] == 2
    for key in REQUIRED:
        assert math.isfinite(figures[key]) and figures[key] > 0.0, key


@pytest.mark.parametrize("failing, nulled", [
    ("odeint", ("odeint_steps_per_s", "speedup_vs_odeint", "speedup_vs_odeint_vec", "odeint_max_err_pu")),
    ("radau", ("max_err_pu", "odeint_max_err_pu", "radau_wall_s")),
])
def test_bench_sim_records_a_failing_reference_solve_and_writes_the_rest(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         failing: str, nulled: tuple[str, ...]):
    real_solve = reference.solve_reference
    message = f"{failing} failed on interval 1: Excess work done on this call"

    def solve_or_give_up(*args, method: str = "radau", **kwargs):
        if method == failing:
            raise RuntimeError(message)
        return real_solve(*args, method=method, **kwargs)

    monkeypatch.setattr(reference, "solve_reference", solve_or_give_up)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(bench_sim, ["--out", str(out), "--system", "microgrid-6", "--episodes", "1",
                                            "--steps", "1", "--n-envs", "2"])
    assert result.exit_code == 0, result.output
    assert "failed" in result.stdout
    assert f"warning: microgrid-6: {failing} failed" in result.stderr
    figures = json.loads(out.read_text())["microgrid-6"]
    assert figures["failures"][failing] == message
    for key in nulled:
        assert figures[key] is None, key
    for key in set(REQUIRED) - set(nulled):
        assert math.isfinite(figures[key]) and figures[key] > 0.0, key
