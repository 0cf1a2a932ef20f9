"""`powernet train`: actor flags without a distributed mode are refused, not silently ignored."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from launch.cli import main


@pytest.mark.parametrize("mode_args, actor_args, named", [
    ([], ["--actors", "2"], "--actors"),
    (["--mode", "local"], ["--envs-per-actor", "4"], "--envs-per-actor"),
    ([], ["--actors", "2", "--envs-per-actor", "4"], "--actors and --envs-per-actor"),
])
def test_actor_flags_without_sync_or_async_mode_exit_2_with_one_line(tmp_path: Path, mode_args: list[str],
                                                                     actor_args: list[str], named: str):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "-c", str(tmp_path / "config.toml"), "--out", str(out),
                                       *mode_args, *actor_args])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {named} need") and "--mode sync or --mode async" in lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_a_system_file_path_trains_and_evaluates_like_a_shipped_name(tmp_path: Path, monkeypatch):
    repo = Path(__file__).resolve().parents[1]
    grid = tmp_path / "grids" / "my-grid.toml"
    grid.parent.mkdir()
    grid.write_text((repo / "simsvc" / "systems" / "microgrid-6.toml").read_text())
    monkeypatch.chdir(tmp_path)  # a relative --system: the run keeps the absolute path
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "-c", str(repo / "configs" / "ia2c.toml"), "--system",
                                       "grids/my-grid.toml", "--steps", "40", "--out", str(run), "--progress", "off"])
    assert result.exit_code == 0, result.output
    assert f'system = "{grid}"' in (run / "config.toml").read_text()
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(main, ["evaluate", "--run", str(run), "--episodes", "1"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("system, message", [("microgrid-7", "unknown system 'microgrid-7'"),
                                             ("missing.toml", "system file not found")])
def test_an_unknown_system_exits_2_before_the_run_starts(tmp_path: Path, system: str, message: str):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "-c", "configs/ia2c.toml", "--system", system, "--out", str(out)])
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1
    assert not out.exists()
