"""`powernet sim`: files, sampling, plots and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from launch.cli import main


def test_sim_writes_trace_sampled_every_10ms_and_a_plot(tmp_path: Path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["sim", "--system", "microgrid-6", "--controller", "secondary", "--seed", "2000",
                                       "--disturbance", "episode", "--out", str(out)])
    assert result.exit_code == 0, result.output
    trace = np.load(out / "trace.npz")
    t = trace["t"]
    assert t[0] == 0.0 and abs(t[-1] - 1.4) < 1e-9  # 0.4 s warm-up + 20 control steps of 0.05 s
    assert np.diff(t).max() <= 0.01 + 1e-12
    control_times = 0.4 + 0.05 * np.arange(1, 21)
    assert all(np.min(np.abs(t - c)) < 1e-9 for c in control_times)
    for key in ("v_pu", "p_w", "q_var", "f_hz"):
        assert trace[key].shape == (t.size, 6) and np.all(np.isfinite(trace[key]))
    assert (out / "trace.png").stat().st_size > 10_000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settling_step"] < 20


def test_sim_disturbance_none_keeps_nominal_loads_and_is_seed_independent(tmp_path: Path):
    traces = []
    for seed in (1, 2):
        out = tmp_path / f"s{seed}"
        result = CliRunner().invoke(main, ["sim", "--controller", "droop", "--disturbance", "none", "--seed", str(seed),
                                           "--out", str(out)])
        assert result.exit_code == 0, result.output
        traces.append(np.load(out / "trace.npz")["v_pu"])
    np.testing.assert_array_equal(traces[0], traces[1])


def test_sim_runs_a_system_without_episode_for_a_duration(tmp_path: Path):
    result = CliRunner().invoke(main, ["sim", "--system", "bidram-4", "--controller", "droop", "--duration", "0.5",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    t = np.load(tmp_path / "trace.npz")["t"]
    assert abs(t[-1] - 0.5) < 1e-9


def test_sim_bad_input_is_one_line_and_exit_status_2(tmp_path: Path):
    for args in (["--system", "nope"], ["--system", "bidram-4"], ["--system", str(tmp_path / "missing.toml")]):
        proc = subprocess.run([sys.executable, "-m", "launch", "sim", *args, "--out", str(tmp_path / "x")],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        assert "Traceback" not in proc.stderr


def test_sim_help_documents_every_option():
    result = CliRunner().invoke(main, ["sim", "--help"])
    for option in ("--system", "--controller", "--seed", "--disturbance", "--duration", "--out"):
        assert option in result.output
