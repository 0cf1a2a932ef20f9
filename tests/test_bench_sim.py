"""`powernet bench sim` on a tiny budget: it runs, prints a table and writes complete, finite JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

from click.testing import CliRunner

from launch.bench_sim import bench_sim

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
