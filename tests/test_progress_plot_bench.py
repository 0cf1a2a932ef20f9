"""Console progress (plain lines off a terminal), `powernet plot` on a tiny run, and the pieces of
`powernet bench system` (stage timers, steady-rate and transport arithmetic)."""

from __future__ import annotations

import io
import json
import time

import pytest
from click.testing import CliRunner

from common.timers import StageTimer, from_meta
from launch.bench_system import steady_rate, transport_breakdown
from launch.cli import main
from launch.progress import MetricsTail, Progress

pytestmark = pytest.mark.timeout(180)

TINY = ["-c", "configs/powernet.toml", "--steps", "200", "--set", "train.log_every=2",
        "--set", "train.checkpoint_every=100"]


def _row(update: int, ret: float | str = "", episodes: int = 0, lag: int = 0) -> dict:
    return {"update": update, "env_steps": 20 * update, "wall_s": 0.05 * update, "episode_return": ret,
            "episodes": episodes, "policy_lag": lag}


def test_plain_progress_prints_every_n_updates_and_a_final_line():
    stream = io.StringIO()  # not a terminal -> plain lines
    with Progress(100, every=2, stream=stream) as progress:
        assert progress.style == "plain"
        for u in range(1, 6):
            progress.update(_row(u, ret=float(u), episodes=1, lag=u % 2))
    lines = stream.getvalue().splitlines()
    assert [ln.split()[2] for ln in lines] == ["2", "4", "5"]  # every 2 updates, then the last one at close
    assert "env steps 100/100 (100%)" in lines[-1] and "400 steps/s" in lines[-1]
    assert "recent return 3.000" in lines[-1] and "policy lag 1" in lines[-1]


def test_a_terminal_gets_a_bar_with_rate_return_and_lag():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    with Progress(100, every=2, stream=stream) as progress:
        assert progress.style == "bar"
        for u in range(1, 6):
            progress.update(_row(u, ret=2.0, episodes=1, lag=3))
    text = stream.getvalue()
    assert "100/100" in text and "steps/s=400" in text and "return=2.000" in text and "lag=3" in text
    assert "progress: " not in text


def test_recent_return_covers_the_last_hundred_episodes():
    progress = Progress(10_000, style="off")
    progress.update(_row(1, ret=-100.0, episodes=50))
    for u in range(2, 12):
        progress.update(_row(u, ret=1.0, episodes=10))
    assert progress.recent_return() == pytest.approx(1.0)
    assert Progress(1, style="off").recent_return() is None


def test_metrics_tail_returns_only_new_complete_rows(tmp_path):
    path = tmp_path / "metrics.csv"
    tail = MetricsTail(path)
    assert tail.read() == []
    path.write_text("update,env_steps\n1,20\n2,4")
    assert tail.read() == [{"update": "1", "env_steps": "20"}]
    with path.open("a") as fh:
        fh.write("0\n3,60\n")
    assert [r["env_steps"] for r in tail.read()] == ["40", "60"]
    assert tail.read() == []


def test_stage_timer_totals_and_wrapped_methods():
    class Env:
        def step(self, x: int) -> int:
            time.sleep(0.01)
            return x + 1

    timers, env = StageTimer(), Env()
    timers.wrap(env, "step", "simulate")
    assert env.step(1) == 2 and env.step(2) == 3
    with timers.stage("send"):
        pass
    totals = timers.totals("t_")
    assert totals["t_simulate"] >= 0.02 and timers.calls["simulate"] == 2
    assert totals["t_wall"] >= totals["t_simulate"] and "t_send" in totals
    assert from_meta({"actor": 0, **totals})["simulate"] == totals["t_simulate"]


def test_transport_share_and_steady_rate(tmp_path):
    stats = {"timers": {"wall": 10.0, "poll": 5.0, "receive": 0.2, "control": 0.1, "publish": 0.2, "learn": 3.0},
             "actor_timers": {"0": {"wall": 10.0, "send": 0.1, "load": 0.1, "simulate": 4.0},
                              "1": {"wall": 10.0, "send": 0.3, "load": 0.1, "simulate": 4.0}}}
    out = transport_breakdown(stats)
    assert out["transport_share"] == pytest.approx((0.5 + 0.3) / 10.0)
    assert out["learner_idle_share"] == pytest.approx(0.47)
    assert out["actor_share"]["simulate"] == pytest.approx(0.4)
    csv = tmp_path / "metrics.csv"
    csv.write_text("update,env_steps,wall_s,policy_lag\n" + "".join(f"{u},{20 * u},{u * 0.1 + 5},0\n"
                                                                   for u in range(1, 11)))
    rate = steady_rate(csv, warmup=0.2)
    assert rate["env_steps_per_s"] == pytest.approx(200.0) and rate["updates"] == 10


def test_train_plain_lines_then_plot_the_run(tmp_path):
    run = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(main, ["train", *TINY, "--out", str(run)])
    assert result.exit_code == 0, result.output
    progress_lines = [ln for ln in result.output.splitlines() if ln.startswith("progress: ")]
    assert len(progress_lines) == 5 and "env steps 200/200 (100%)" in progress_lines[-1]
    assert json.loads(result.output.strip().splitlines()[-1])["env_steps"] == 200

    result = runner.invoke(main, ["evaluate", "--run", str(run), "--episodes", "2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["plot", "--run", str(run), "--traces", "1"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (run / "plots").iterdir())
    assert names == ["eval-episode-2000.png", "losses.png", "return.png", "violations.png"]
    for name in names:
        assert (run / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("make", ["missing", "empty_dir", "bad_csv"])
def test_plot_rejects_a_missing_or_invalid_run_in_one_line(tmp_path, make):
    run = tmp_path / "run"
    if make != "missing":
        run.mkdir()
    if make == "bad_csv":
        (run / "metrics.csv").write_text("")
    result = CliRunner().invoke(main, ["plot", "--run", str(run)])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("error: ")


def test_sync_training_prints_plain_progress_lines_when_piped(tmp_path):
    import subprocess
    import sys

    run = tmp_path / "sync"
    proc = subprocess.run([sys.executable, "-m", "launch", "train", *TINY, "--mode", "sync", "--actors", "1",
                           "--out", str(run)], capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("progress: ")]
    assert lines and "env steps 200/200 (100%)" in lines[-1] and "policy lag 0" in lines[-1]


def test_bench_system_run_length_follows_the_number_of_agents():
    from launch.bench_system import default_steps

    assert (default_steps(6), default_steps(20), default_steps(200)) == (3000, 1500, 500)
