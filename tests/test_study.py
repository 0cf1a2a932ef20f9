"""The study runner and its report: a tiny grid (2 algorithms x 1 seed) interrupted mid-run and re-run
(finished runs skipped, the unfinished one resumed), the report files, config validation, the t-interval,
and the α/β heat map from a synthetic study."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from proc_helpers import alive, kill_all, wait_gone

from common.errors import InputError
from launch.cli import main
from launch.report import write_report
from launch.report_stats import difference_interval, mean_interval, t_critical
from launch.report_tables import communication_lines, efficiency_lines, ranking_lines, scenario_note
from launch.run_state import FINISHED, RUN_SPEC, last_env_steps
from launch.scheduler import RunningTask, Task, estimate_left_s, format_duration, time_left_s
from launch.study_archive import compact_metrics
from launch.study_results import Group, RunResult
from launch.study_spec import load_study, override_tag, run_id
from launch.training_curves import learning_facts

pytestmark = pytest.mark.timeout(150)
REPO = Path(__file__).resolve().parent.parent
STEPS = 1200
TINY = f"""
[study]
algorithms = ["ia2c", "powernet"]
systems = ["microgrid-6"]
seeds = [0]
steps = {STEPS}
jobs = 1
eval_episodes = 2
# the first checkpoint at update 20 (400 env steps) leaves 800 steps for the interrupt to land before the
# run would finish (update 40 left only 400, a race that a loaded machine can lose)
set = ["train.checkpoint_every=20", "train.log_every=5"]
progress_every_s = 1.0
"""


def _study_cmd(config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "launch", "study", "-c", str(config), "--out", str(out)]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _attempt_pids(out: Path) -> list[int]:
    pids = []
    for spec in (out / "runs").glob(f"*/{RUN_SPEC}"):
        pids += [a["pid"] for a in json.loads(spec.read_text())["attempts"]]
    return pids


def test_study_resumes_after_interrupt_skips_finished_runs_and_reports(tmp_path, no_orphans):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "study"
    first, second = out / "runs" / "ia2c_mg6_base_s0", out / "runs" / "powernet_mg6_base_s0"

    # 1. interrupt the study (SIGINT to its process group, as Ctrl-C) once the first run has finished and the
    #    second has written a checkpoint
    log1 = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(_study_cmd(config, out), cwd=REPO, env=_env(), stdout=log1, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not ((first / FINISHED).is_file() and (second / "checkpoints" / "latest.pt").is_file()):
            assert proc.poll() is None, (tmp_path / "first.log").read_text()
            assert time.monotonic() < deadline, "the study never reached the second run's first checkpoint"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log1.close()
    text = (tmp_path / "first.log").read_text()
    assert "interrupted: re-run the same command to continue" in text
    assert not wait_gone(_attempt_pids(out), 5.0), "a training process outlived the interrupted study"
    assert not (second / FINISHED).exists()
    interrupted_at = last_env_steps(second / "metrics.csv")
    assert 0 < interrupted_at < STEPS, "the second run finished before the interrupt: raise STEPS"
    first_ckpt_mtime = (first / "checkpoints" / "latest.pt").stat().st_mtime_ns

    # 1b. --no-train evaluates the finished run and leaves the unfinished one as it is
    partial = subprocess.run([*_study_cmd(config, out), "--no-train"], cwd=REPO, env=_env(), capture_output=True,
                             text=True, timeout=60)
    assert partial.returncode == 0, partial.stdout + partial.stderr
    assert "1 run(s) left to train" in partial.stdout and "train:" not in partial.stdout
    assert json.loads((first / "eval" / "summary.json").read_text())["seeds"] == [2000, 2025]
    assert not (second / "eval").exists() and last_env_steps(second / "metrics.csv") == interrupted_at

    # 2. re-run: the finished run is skipped, the unfinished one resumes from its checkpoint
    done = subprocess.run(_study_cmd(config, out), cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skip ia2c_mg6_base_s0: finished" in done.stdout
    assert "powernet_mg6_base_s0 (resume) done" in done.stdout
    assert (first / "checkpoints" / "latest.pt").stat().st_mtime_ns == first_ckpt_mtime  # not retrained
    spec = json.loads((second / RUN_SPEC).read_text())
    assert [a["resumed"] for a in spec["attempts"]] == [False, True]
    assert "--resume" in spec["attempts"][1]["command"]
    assert "resumed at update" in (second / "logs" / "learner.log").read_text()
    for run in (first, second):
        assert json.loads((run / FINISHED).read_text())["env_steps"] >= STEPS
        summary = json.loads((run / "eval" / "summary.json").read_text())
        assert summary["seeds"] == [2000, 2025]
    for controller in ("droop", "secondary"):
        summary = json.loads((out / "baselines" / "microgrid-6" / controller / "summary.json").read_text())
        assert summary["episodes"] == 2
    assert not wait_gone(_attempt_pids(out), 5.0)

    # 3. a third run of a complete study trains and evaluates nothing
    eval_mtime = (second / "eval" / "summary.json").stat().st_mtime_ns
    again = subprocess.run(_study_cmd(config, out), cwd=REPO, env=_env(), capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 0, again.stderr
    assert "train " not in again.stdout and "evaluate " not in again.stdout
    assert (second / "eval" / "summary.json").stat().st_mtime_ns == eval_mtime

    # 4. the report
    result = CliRunner().invoke(main, ["report", "--study", str(out)])
    assert result.exit_code == 0, result.output
    report = (out / "report" / "report.md").read_text()
    for row in ("| ia2c | base | 1 |", "| powernet | base | 1 |", "| droop control |", "| secondary control |"):
        assert row in report
    assert "Training commit(s)" in report and "Machine:" in report
    assert "powernet study -c" in report and "--resume" in report and "## Wall time per run" in report
    for png in ("learning_curves_microgrid-6.png", "voltages_microgrid-6_seed2000.png"):
        path = out / "report" / png
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # 5. a later pass with a larger budget (--steps) continues both finished runs and evaluates them again
    more = STEPS + 400
    longer = subprocess.run([*_study_cmd(config, out), "--steps", str(more)], cwd=REPO, env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert longer.returncode == 0, longer.stdout + longer.stderr
    assert f"{more} env steps each" in longer.stdout and "2 to resume" in longer.stdout
    for run in (first, second):
        assert json.loads((run / FINISHED).read_text())["env_steps"] >= more
        assert last_env_steps(run / "metrics.csv") >= more
        assert json.loads((run / RUN_SPEC).read_text())["attempts"][-1]["resumed"] is True
    assert (second / "eval" / "summary.json").stat().st_mtime_ns > eval_mtime

    # 6. the archive: no checkpoints, the same report, and a study restored from it has nothing left to do
    archive, full_report, archived_report = tmp_path / "archive", tmp_path / "full", tmp_path / "from_archive"
    result = CliRunner().invoke(main, ["report", "--study", str(out), "--out", str(full_report),
                                       "--archive", str(archive)])
    assert result.exit_code == 0, result.output
    assert "2 finished run(s), no checkpoints" in result.output
    assert not list(archive.rglob("*.pt")) and not list(archive.rglob("tb"))
    assert last_env_steps(archive / "runs" / first.name / "metrics.csv") == last_env_steps(first / "metrics.csv")
    result = CliRunner().invoke(main, ["report", "--study", str(archive), "--out", str(archived_report)])
    assert result.exit_code == 0, result.output
    for name in ("table.csv", "efficiency.csv"):
        assert (archived_report / name).read_text() == (full_report / name).read_text()
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(archive / "runs" / first.name, archive / "runs" / "not_in_this_study")
    result = CliRunner().invoke(main, ["study", "-c", str(config), "--out", str(elsewhere), "--restore",
                                       str(archive), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "0 finished, 2 to restore, 0 to resume, 0 new" in result.output
    assert f" restore  {first.name} from {archive}" in result.output and not elsewhere.exists()
    restored = subprocess.run([*_study_cmd(config, elsewhere), "--restore", str(archive)], cwd=REPO, env=_env(),
                              capture_output=True, text=True, timeout=60)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "restored 2 finished run(s)" in restored.stdout and "2 finished, 0 to resume, 0 new" in restored.stdout
    assert "train " not in restored.stdout and "evaluate " not in restored.stdout
    assert sorted(p.name for p in (elsewhere / "runs").iterdir()) == sorted([first.name, second.name])
    invocations = (elsewhere / "invocations.jsonl").read_text().splitlines()
    assert len(invocations) == len((out / "invocations.jsonl").read_text().splitlines()) + 1
    # a folder that is not an archive is neither overwritten nor read: one line, exit status 2
    result = CliRunner().invoke(main, ["report", "--study", str(out), "--out", str(full_report),
                                       "--archive", str(tmp_path)])
    assert result.exit_code == 2 and "is not a study archive" in result.output
    assert (tmp_path / "first.log").is_file()
    result = CliRunner().invoke(main, ["study", "-c", str(config), "--out", str(tmp_path / "x"),
                                       "--restore", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no runs/ folder" in result.output and not (tmp_path / "x").exists()


def test_unknown_study_key_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.replace("jobs = 1", "jbos = 1"))
    result = CliRunner().invoke(main, ["study", "-c", str(bad), "--out", str(tmp_path / "s")])
    assert result.exit_code == 2
    assert "unknown key study.jbos" in result.output
    result = CliRunner().invoke(main, ["study", "-c", str(bad), "--out", str(tmp_path / "s"), "--steps", "0"])
    assert result.exit_code == 2 and "--steps must be at least 1" in result.output
    bad.write_text(TINY + '\n[grid]\n"train.spatial_discount" = [0.5, 1.5]\n')
    result = CliRunner().invoke(main, ["study", "-c", str(bad), "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "above the maximum" in result.output
    assert not (tmp_path / "s").exists()


def test_study_configs_expand_to_the_planned_grids(tmp_path):
    sweep = load_study(REPO / "configs" / "studies" / "alpha_beta_sweep.toml")
    assert len(sweep.runs) == 4 * 3 * 3 and sweep.steps == 1_000_000
    assert {r.tag for r in sweep.runs} >= {"alpha0.5-beta0", "alpha1-beta0.4"}
    for name, system, methods in (("paper_mg6", "microgrid-6", 8), ("paper_mg20", "microgrid-20", 7),
                                  ("scenario_paper_mg20", "microgrid-20", 8),
                                  ("outage_mg20", "microgrid-20", 8), ("fault_mg20", "microgrid-20", 8)):
        study = load_study(REPO / "configs" / "studies" / f"{name}.toml")  # MAPPO joined paper_mg6 only
        assert len(study.runs) == methods * 3 and {r.system for r in study.runs} == {system}
    assert override_tag({"train.spatial_discount": 0.75, "env.smoothing_beta": 0.2}) == "alpha0.75-beta0.2"
    result = CliRunner().invoke(main, ["study", "-c", str(REPO / "configs" / "studies" / "paper_mg6.toml"),
                                       "--out", str(tmp_path / "p"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output.count("     new  powernet train") == 24 and not (tmp_path / "p").exists()


def test_every_shipped_study_config_loads_and_plans_runs():
    """A study file the results cite must parse and expand (its algorithms, systems and --set keys valid)."""
    paths = sorted((REPO / "configs" / "studies").glob("*.toml"))
    assert len(paths) >= 18
    for path in paths:
        study = load_study(path)
        assert study.runs and len({r.run_id for r in study.runs}) == len(study.runs), path.name


def test_study_systems_are_shipped_names_or_system_files(tmp_path):
    system = tmp_path / "my-grid.toml"
    shutil.copy(REPO / "simsvc" / "systems" / "microgrid-6.toml", system)
    (tmp_path / "ia2c.toml").write_text(f'[model]\nalgorithm = "ia2c"\n[env]\nsystem = "{system}"\n')
    config = tmp_path / "study.toml"

    def study_of(systems: str) -> str:
        return (f'[study]\nalgorithms = ["ia2c"]\nsystems = {systems}\nseeds = [0]\nsteps = 100\n'
                f'config = "{tmp_path}/{{algorithm}}.toml"\n')

    config.write_text(study_of(f'["{system}"]'))
    assert [r.system for r in load_study(config).runs] == [str(system)]
    # the default template is the algorithm's one config; the study's system goes to every run
    config.write_text(f'[study]\nalgorithms = ["ia2c"]\nsystems = ["{system}", "microgrid-20"]\nseeds = [0]\n'
                      'steps = 100\n')
    runs = load_study(config).runs
    assert [Path(r.base_config).resolve() for r in runs] == [REPO / "configs" / "ia2c.toml"] * 2
    assert [r.run_id for r in runs] == ["ia2c_my-grid_base_s0", "ia2c_mg20_base_s0"]
    assert [r.set_args([])[0] for r in runs] == [f'env.system="{system}"', 'env.system="microgrid-20"']
    config.write_text(study_of('["microgrid-7"]'))
    with pytest.raises(InputError, match="study.systems: unknown system 'microgrid-7'"):
        load_study(config)
    config.write_text(study_of(f'["{tmp_path / "missing.toml"}"]'))
    with pytest.raises(InputError, match="study.systems: system file not found"):
        load_study(config)


def test_run_ids_name_the_committed_archives_runs():
    """--restore matches an archive's runs by directory name: the ids a study gives its runs must not drift."""
    specs = sorted((REPO / "results").glob(f"*/study/runs/*/{RUN_SPEC}"))
    assert specs
    for path in specs:
        spec = json.loads(path.read_text())
        assert run_id(spec["algorithm"], spec["system"], spec["tag"], spec["seed"]) == path.parent.name


def test_t_interval_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 5, 30, 31, 60, 200):
        assert t_critical(df) == pytest.approx(stats.t.ppf(0.975, df), abs=2e-4)
    mean, half, n = mean_interval([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3) and half == pytest.approx(stats.t.ppf(0.975, 2) * 1.0 / np.sqrt(3), abs=1e-3)
    assert np.isnan(mean_interval([4.0])[1])


def test_report_draws_the_alpha_beta_heat_map(tmp_path):
    study = tmp_path / "sweep"
    rng = np.random.default_rng(0)
    for alpha in (0.5, 1.0):
        for beta in (0.0, 0.2):
            for seed in (0, 1):
                tag = override_tag({"train.spatial_discount": alpha, "env.smoothing_beta": beta})
                run = study / "runs" / f"powernet_mg6_{tag}_s{seed}"
                (run / "eval").mkdir(parents=True)
                (run / "config.toml").write_text(f"# git commit abc\n[env]\nsmoothing_beta = {beta}\n"
                                                 f"control_dt_s = 0.05\n[train]\nspatial_discount = {alpha}\n")
                (run / RUN_SPEC).write_text(json.dumps({
                    "run_id": run.name, "algorithm": "powernet", "system": "microgrid-6", "tag": tag,
                    "overrides": {"train.spatial_discount": alpha, "env.smoothing_beta": beta}, "seed": seed,
                    "attempts": [{"wall_s": 1.0, "end_env_steps": 100, "command": "powernet train ..."}]}))
                (run / "metrics.csv").write_text("update,env_steps,episode_return\n1,20,1.0\n2,40,2.0\n")
                (run / FINISHED).write_text(json.dumps({"env_steps": 40}))
                (run / "eval" / "summary.json").write_text(json.dumps({
                    "seeds": [2000], "mean_return": 4 * alpha + beta + rng.normal(0, 0.1),
                    "violation_rate": 0.0, "mean_settling_step": 1.0, "max_dev_pu": 0.03}))
                np.savez(run / "eval" / "episode-2000.npz", v_pu=np.ones((20, 6)))
    path = write_report(study)
    report = path.read_text()
    assert "α/β sweep: powernet on microgrid-6" in report and "at α = 1, β = 0.2" in report
    assert "runner-up α = 1, β = 0 " in report and "intervals overlap: yes" in report
    assert "| powernet | alpha1-beta0.2 | 2 |" in report and " ± " in report
    assert (path.parent / "alpha_beta_microgrid-6_powernet.png").is_file()
    assert (path.parent / "learning_curves_microgrid-6.png").is_file()
    assert "Sample efficiency on microgrid-6" in report and (path.parent / "efficiency.csv").is_file()
    assert "By area-mean training return" not in report  # one method in four variants: nothing to rank


def test_interrupted_study_leaves_no_children_even_when_killed_hard(tmp_path, no_orphans):
    """SIGKILL of the study process itself: its training child gets SIGTERM from the kernel (PDEATHSIG)."""
    config = tmp_path / "tiny.toml"
    config.write_text(TINY.replace(f"steps = {STEPS}", "steps = 100000"))
    out = tmp_path / "study"
    proc = subprocess.Popen(_study_cmd(config, out), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while not pids:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
            try:
                pids = _attempt_pids(out)
            except (OSError, ValueError):
                pids = []
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        left = wait_gone(pids, 10.0)
        assert not left, f"training process {left} outlived a SIGKILLed study"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_all(p for p in pids if alive(p))


def _group(algorithm: str, returns: list[float]) -> Group:
    runs = [RunResult(Path(f"{algorithm}{k}"), {"system": "microgrid-6", "algorithm": algorithm, "tag": "base"},
                      True, {"mean_return": r}) for k, r in enumerate(returns)]
    return Group("microgrid-6", algorithm, "base", runs)


def test_ranking_paragraph_states_rank_margin_and_interval_overlap():
    controllers = {"secondary": {"mean_return": 3.0}, "droop": {"mean_return": -9.0}}
    apart = [_group("powernet", [5.0, 5.1, 4.9]), _group("ia2c", [4.0, 4.1, 3.9])]
    text = ranking_lines(apart, controllers, "microgrid-6")[0]
    assert "powernet ranks 1 of 2" in text and "the best other is ia2c" in text and "+1.000" in text
    assert "they do not overlap" in text
    assert "Against secondary control (3.000): +2.000; the controller's value lies below" in text
    close = [_group("powernet", [4.0, 5.0, 4.5]), _group("ia2c", [4.0, 5.5, 4.9])]
    text = ranking_lines(close, controllers, "microgrid-6")[0]
    assert "powernet ranks 2 of 2" in text and "they overlap" in text
    assert ranking_lines([_group("powernet", [1.0])], controllers, "microgrid-6") == []  # nothing to compare
    single = ranking_lines([_group("powernet", [1.0]), _group("ia2c", [2.0])], {}, "microgrid-6")[0]
    assert "single training seeds" in single


def test_difference_interval_matches_welchs_t_interval_from_scipy():
    from scipy import stats

    a, b = [5.1, 5.4, 4.9, 5.3], [4.2, 4.9, 4.4]
    diff, half = difference_interval(a, b)
    t = stats.ttest_ind(a, b, equal_var=False)
    df = math.floor(t.df)  # our table is per integer degree of freedom
    se = math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
    assert diff == pytest.approx(np.mean(a) - np.mean(b))
    assert half == pytest.approx(stats.t.ppf(0.975, df) * se, rel=1e-4)
    assert math.isnan(difference_interval([1.0], [2.0, 3.0])[1])  # one seed: no interval
    assert math.isnan(difference_interval([1.0, 1.0], [2.0, 2.0])[1])  # no spread: no interval


def test_communication_paragraph_claims_a_difference_only_beyond_the_welch_interval():
    groups = [_group("ia2c", [4.0, 4.1, 3.9]), _group("powernet", [5.0, 5.1, 4.9]),
              _group("dial", [3.0, 3.1, 2.9]), _group("commnet", [3.5, 4.6, 4.0]), _group("mappo", [9.0, 9.1, 9.2])]
    lines = communication_lines(groups, "microgrid-6")
    rows = {line.split(" | ")[0].strip("| "): line for line in lines if line.startswith("| ") and "---" not in line}
    assert "| powernet | base | +1.000 |" in rows["powernet"] and "better than ia2c" in rows["powernet"]
    assert "worse than ia2c" in rows["dial"]
    assert "no difference shown" in rows["commnet"]
    assert "mappo" not in rows  # not a communicating method
    assert communication_lines([_group("powernet", [5.0, 5.1])], "microgrid-6") == []  # no reference
    single = communication_lines([_group("ia2c", [4.0]), _group("dial", [5.0, 5.2])], "microgrid-6")
    assert any("no interval" in line for line in single)


def test_a_scenario_studys_report_says_which_baselines_were_fitted_where():
    assert scenario_note({"local": {"mean_return": 1.0}}) == []  # classic: nothing to say
    note = scenario_note({"local": {"mean_return": 1.0, "scenario": "sensoroutage"}})[0]
    assert "scenario `sensoroutage`" in note and "fitted on `classic`" in note
    assert "powernet gap --scenario sensoroutage" in note


def _curve_run(root: Path, algorithm: str, seed: int, returns: np.ndarray) -> RunResult:
    run = root / f"{algorithm}_s{seed}"
    run.mkdir(parents=True)
    rows = "\n".join(f"{k + 1},{20 * (k + 1)},{r}" for k, r in enumerate(returns))
    (run / "metrics.csv").write_text("update,env_steps,episode_return\n" + rows + "\n")
    return RunResult(run, {"system": "microgrid-6", "algorithm": algorithm, "tag": "base"}, True, None)


def test_sample_efficiency_table_finds_the_threshold_crossing_of_each_run(tmp_path):
    def step_curve(switch: int, low: float = 0.0, high: float = 4.0) -> np.ndarray:
        return np.where(np.arange(1000) < switch, low, high)

    groups = [Group("microgrid-6", "powernet", "base", [_curve_run(tmp_path, "powernet", s, step_curve(w))
                                                       for s, w in enumerate((200, 300))]),
              Group("microgrid-6", "ia2c", "base", [_curve_run(tmp_path, "ia2c", s, step_curve(w))
                                                   for s, w in enumerate((600, 700))]),
              Group("microgrid-6", "consenet", "base", [_curve_run(tmp_path, "consenet", 0, np.full(1000, 0.5))])]
    rows: list[dict] = []
    text = "\n".join(efficiency_lines(groups, "microgrid-6", rows))
    # 20 env steps a row, read in 500-step bins (25 rows each), so a 4,000-step window is 8 bins. r0 = mean
    # start (0, 0, 0, 0, 0.5) = 0.1; best final 4.0; threshold 0.1 + 0.9 * 3.9 = 3.61, which a window first
    # reaches when all 8 of its bins are high. A switch at row 200 (env step 4,000) makes bin 9 the first high
    # one, the window of bins 9-16 the first to reach the threshold, and the middle of that window, the end
    # of bin 12, env step 6,000: 500 * (switch / 25 + 4) in general.
    assert "Threshold: 3.610" in text and "starting return 0.100" in text and "final return 4.000" in text
    by_method = {r["method"]: r for r in rows}
    assert by_method["powernet"]["steps_to_threshold"] == pytest.approx((6000 + 8000) / 2)
    assert by_method["ia2c"]["steps_to_threshold"] == pytest.approx((14000 + 16000) / 2)
    assert by_method["consenet"]["seeds_reaching"] == 0 and "| consenet | base | 1 |" in text
    assert text.count("| never |") == 1
    # the curves have the same shape, ia2c's 16 bins later on average: the area means differ by 4.0 x 16 x 500
    # env steps / 19,500 (the span from the first bin's end to the last's). Two seeds each: t(0.975, 1) = 12.7
    # makes both intervals wide enough to overlap
    assert "powernet ranks 1 of 3; the best other is ia2c, a difference of +1.641" in text
    assert "within the two 95 % intervals" in text
    # the same early curve in a run ten times as long crosses at the same env step
    long_run = _curve_run(tmp_path, "long", 0, np.concatenate([step_curve(200), np.full(9000, 4.0)]))
    facts = learning_facts(long_run.run_dir)
    assert facts is not None and facts.steps_to(3.61) == pytest.approx(6000)
    # a seed that never reaches the threshold is counted, not averaged in as a step count
    groups[1].runs.append(_curve_run(tmp_path, "ia2c", 2, np.zeros(1000)))
    text = "\n".join(efficiency_lines(groups, "microgrid-6", []))
    assert "(2 of 3 seeds; the rest never)" in text
    # a run cut short (no FINISHED marker) is left out of the curves' numbers
    cut = _curve_run(tmp_path, "ia2c", 3, np.zeros(50))
    cut.finished = False
    groups[1].runs.append(cut)
    assert "(2 of 3 seeds; the rest never)" in "\n".join(efficiency_lines(groups, "microgrid-6", []))


def test_a_runs_archived_curve_gives_the_numbers_of_its_full_metrics(tmp_path):
    # 15,000 env steps at 20 a row, NaN where no episode ended, and a resumed attempt that re-logged steps
    # 8,020-10,000 after a crash at 10,000 (its rows supersede the first attempt's)
    rng = np.random.default_rng(0)
    steps = np.r_[np.arange(20, 10_001, 20), np.arange(8020, 15_001, 20)]
    returns = rng.normal(2.0, 1.0, steps.size) + steps / 5000
    returns[rng.random(steps.size) < 0.3] = np.nan
    full = tmp_path / "full"
    full.mkdir()
    rows = [f"{k + 1},{s},{0.01 * k},{'' if np.isnan(r) else r},{int(not np.isnan(r))},0.0"
            for k, (s, r) in enumerate(zip(steps, returns, strict=True))]
    (full / "metrics.csv").write_text("update,env_steps,wall_s,episode_return,episodes,violation_rate\n"
                                      + "\n".join(rows) + "\n")
    assert compact_metrics(full / "metrics.csv", tmp_path / "compact" / "metrics.csv") == 15_000 // 500
    a, b = learning_facts(full), learning_facts(tmp_path / "compact")
    assert a is not None and b is not None
    assert (a.start, a.final, a.area_mean) == (b.start, b.final, b.area_mean)
    np.testing.assert_array_equal(a.steps, b.steps)
    # the second attempt's rows replaced the first's: bin (8,000, 8,500] holds only rows after the crash
    second = steps[500:]
    in_bin = (second > 8000) & (second <= 8500)
    assert a.steps[16] == 8500 and b.smoothed.size == 30
    compact = np.genfromtxt(tmp_path / "compact" / "metrics.csv", delimiter=",", names=True)
    assert compact["episode_return"][16] == pytest.approx(np.nanmean(returns[500:][in_bin]))
    assert compact["episodes"].sum() == np.isfinite(np.r_[returns[:400], returns[500:]]).sum()
    # a metrics.csv with only the curve's own columns compacts too; the others stay empty
    bare = _curve_run(tmp_path, "bare", 0, np.linspace(0.0, 4.0, 1000)).run_dir
    assert compact_metrics(bare / "metrics.csv", tmp_path / "bare_compact" / "metrics.csv") == 20_000 // 500
    assert learning_facts(bare).area_mean == learning_facts(tmp_path / "bare_compact").area_mean


def test_study_eta_comes_from_the_rate_of_this_invocation():
    assert estimate_left_s(0, 10.0, 1000, 2) is None  # no rate yet
    assert estimate_left_s(500, 100.0, 1000, 1) == pytest.approx(200.0)  # 5 units/s of one job
    assert estimate_left_s(500, 100.0, 1000, 2) == pytest.approx(100.0)
    assert [format_duration(s) for s in (20, 14 * 60 + 10, 2 * 3600 + 5 * 60)] == \
        ["under a minute", "14 min", "2 h 05 min"]

    def task(have: int, total: int) -> Task:
        return Task("t", lambda slot: [], Path("log"), work=lambda: (have, total))

    now = time.monotonic()
    # two runs 100 s in: one moved 300 -> 800 steps, the other 0 -> 300 (8 steps/s of one job); a queued run
    # has 1000 to do and an earlier attempt of this invocation did 200 in 50 s: (800 + 200) / 150 s per job
    running = [RunningTask(task(800, 1000), None, None, now - 100, 0, units0=300),  # type: ignore[arg-type]
               RunningTask(task(300, 1000), None, None, now - 100, 1, units0=0)]  # type: ignore[arg-type]
    left = time_left_s(running, [task(0, 1000)], units_done=200, busy_s=50.0, jobs=2)
    rate = (500 + 300 + 200) / 250.0
    assert left == pytest.approx((200 + 700 + 1000) / rate / 2, rel=1e-2)
    no_work = Task("eval", lambda slot: [], Path("log"))
    assert time_left_s([], [no_work], 0, 0.0, 2) is None


def test_a_report_warns_of_runs_whose_simulation_diverged_and_the_archive_keeps_the_count(tmp_path):
    from launch.report import divergence_lines

    header = "update,env_steps,wall_s,episode_return,episodes,violation_rate,diverged\n"
    runs = {"bad": [(1, 160, 1.0, 9.0, 8, 0.1, 1), (2, 320, 2.0, -30.0, 8, 0.2, 2), (3, 480, 3.0, 9.5, 8, 0.1, 0)],
            "good": [(1, 160, 1.0, 9.0, 8, 0.1, 0), (2, 320, 2.0, 9.2, 8, 0.1, 0)]}
    results = []
    for name, rows in runs.items():
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        (run / "metrics.csv").write_text(header + "".join(",".join(map(str, r)) + "\n" for r in rows))
        results.append(RunResult(run_dir=run, spec={"run_id": name}, finished=True, summary=None))
    lines = divergence_lines(results)
    assert "**1 of 2 runs had training episodes whose simulation diverged**" in lines[2]
    assert "| bad | 3 | 24 | 12.50% |" in lines
    assert not any(line.startswith("| good") for line in lines)
    assert divergence_lines(results[1:]) == []  # nothing to warn about, no section
    compact_metrics(tmp_path / "runs" / "bad" / "metrics.csv", tmp_path / "archived" / "metrics.csv")
    archived = RunResult(run_dir=tmp_path / "archived", spec={"run_id": "bad"}, finished=True, summary=None)
    assert "| bad | 3 | 24 | 12.50% |" in divergence_lines([archived])


def test_wall_time_of_a_run_the_study_did_not_time_comes_from_its_own_clock(tmp_path):
    """A run trained outside the study (found finished) has no attempts: the report shows metrics.csv's last
    wall_s, marked, instead of 0 s, and a run with neither shows a dash and stays out of the spread."""
    from launch.report import _wall_time_lines

    header = "update,env_steps,wall_s,episode_return,episodes,violation_rate,diverged\n"
    timed = RunResult(tmp_path / "timed", {"run_id": "timed", "attempts": [
        {"wall_s": 100.0, "end_env_steps": 600}, {"wall_s": 50.0, "end_env_steps": 1200}]}, True, None)
    adopted = tmp_path / "adopted"
    adopted.mkdir()
    (adopted / "metrics.csv").write_text(header + "1,600,30.5,9.0,8,0.1,0\n2,1200,61.25,9.5,8,0.1,0\n")
    found = RunResult(adopted, {"run_id": "adopted", "attempts": []}, True, None)
    bare = RunResult(tmp_path / "bare", {"run_id": "bare"}, True, None)
    assert (timed.train_wall_s, timed.env_steps) == (150.0, 1200)
    assert (found.train_wall_s, found.env_steps, found.recorded) == (61.25, 1200, False)
    assert (bare.train_wall_s, bare.env_steps) == (None, None)
    lines = _wall_time_lines([timed, found, bare])
    assert "| timed | 1200 | 2 | 150.0 | – |" in lines
    assert "| adopted | 1200 | 0 | 61.2* | – |" in lines
    assert "| bare | – | 0 | – | – |" in lines
    spread = next(line for line in lines if line.startswith("Training wall time"))
    assert "min 61.2 s, max 150.0 s" in spread
    assert any("not timed by the study" in line for line in lines)
    assert not any("not timed" in line for line in _wall_time_lines([timed]))
