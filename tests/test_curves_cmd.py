"""`powernet curves`: several runs' evaluation curves in one figure with reference lines, a table of first,
best and last points, the curves as JSON, and one line with exit 2 for a run without a curve or a bad
reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from launch.cli import main
from launch.eval_curve import EVAL_CURVE_FIELDS


def _curve(run: Path, points: list[tuple[int, float]]) -> Path:
    run.mkdir(parents=True)
    lines = [",".join(EVAL_CURVE_FIELDS)]
    lines += [f"{steps},{k},{steps / 100},{ret},{ret - 1},0.0,0.04,1.0" for k, (steps, ret) in enumerate(points)]
    (run / "eval_curve.csv").write_text("\n".join(lines) + "\n")
    return run


def test_curves_draws_every_run_and_tables_first_best_and_last(tmp_path):
    a = _curve(tmp_path / "slow", [(50_000, 13.0), (100_000, 14.5), (150_000, 14.1)])
    b = _curve(tmp_path / "fast", [(50_000, 15.0), (100_000, 16.3)])
    out = tmp_path / "fig" / "curves.png"
    result = CliRunner().invoke(main, ["curves", "--run", str(a), "--run", str(b), "--label", "8 envs",
                                       "--label", "32 envs", "--reference", "local rule=16.246",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = result.output.splitlines()
    assert "13.000 @  50,000    14.500 @ 100,000    14.100 @ 150,000" in lines[1] and lines[1].startswith("8 envs")
    assert "15.000 @  50,000    16.300 @ 100,000    16.300 @ 100,000" in lines[2]
    assert "reference local rule: 16.246" in result.output
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["references"] == {"local rule": 16.246}
    assert [s["label"] for s in saved["runs"]] == ["8 envs", "32 envs"]
    assert saved["runs"][0]["eval_return"] == [13.0, 14.5, 14.1]


@pytest.mark.parametrize("make, extra, message", [
    (lambda p: p.mkdir(), [], "no eval_curve.csv (train with train.eval_every > 0"),
    (lambda p: _curve(p, [(1, 1.0)]), ["--reference", "local"], "expected NAME=VALUE"),
    (lambda p: _curve(p, [(1, 1.0)]), ["--reference", "local=inf"], "expected NAME=VALUE"),
    (lambda p: _curve(p, [(1, 1.0)]), ["--label", "a", "--label", "b"], "--label given 2 times for 1 --run"),
    (lambda p: (p.mkdir(), (p / "eval_curve.csv").write_text("env_steps,eval_return\nx,1\n")), [],
     "eval_curve.csv is not readable"),
])
def test_curves_refuses_bad_input_with_one_line_and_exit_2(tmp_path, make, extra, message):
    run = tmp_path / "run"
    make(run)
    result = CliRunner().invoke(main, ["curves", "--run", str(run), "--out", str(tmp_path / "c.png"), *extra])
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1
