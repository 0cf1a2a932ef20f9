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
