"""`powernet study`: a grid of training runs (algorithm x system x override set x training seed), run a few
at a time as `powernet train` subprocesses, then greedy evaluation of every final checkpoint and the
conventional controllers on the same evaluation seeds.

Study directory layout (all of it can be re-created by re-running the same command):

    study.toml            the study config as last run
    study.log             progress lines of every invocation
    invocations.jsonl     one line per invocation: command, commit, machine, start/end, outcome
    runs/<id>/            a `powernet train` run directory, plus study-run.json (spec, command, attempts
                          with wall times) and FINISHED.json (the marker of a finished run)
    baselines/<system>/<controller>/summary.json and episode-<seed>.npz

A run is finished when FINISHED.json records at least `steps` env steps (or, without the marker, when its
latest checkpoint has them); an unfinished run with a checkpoint continues with `--resume`. A study that
outlasts its machine continues elsewhere from a compact archive of its finished runs (launch.study_archive:
`powernet report --archive`, then `powernet study --restore`). The study config and its runs are
launch.study_spec, a run directory's state launch.run_state, the subprocess pool launch.scheduler, the
controllers launch.baselines.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from launch.baselines import run_baselines
from launch.jsonfile import read_json, write_json
from launch.provenance import git_commit, has_uncommitted_changes, machine
from launch.run_state import FINISHED, RUN_SPEC, eval_is_current, last_env_steps, run_state
from launch.scheduler import Interrupted, Task, cli_text, interruptible, now_text, run_tasks
from launch.study_spec import RunSpec, Study

DIST_PORT_BASE = 25555  # sync/async runs of job slot k use ports 25555 + 10 k, +1, +2


def _spec_record(run: RunSpec, study: Study) -> dict[str, Any]:
    """A run's study-run.json before its first attempt."""
    return {"run_id": run.run_id, "algorithm": run.algorithm, "system": run.system, "tag": run.tag,
            "overrides": run.overrides, "seed": run.seed, "steps": study.steps, "mode": study.mode,
            "base_config": run.base_config, "attempts": [], "evaluations": []}


def _train_args(run: RunSpec, study: Study, run_dir: Path, resume: bool, slot: int = 0) -> list[str]:
    """The `powernet train` arguments of a run in job slot `slot`."""
    args = ["train", "-c", run.base_config, "--mode", study.mode, "--steps", str(study.steps),
            "--out", str(run_dir), "--progress", "plain"]
    for item in run.set_args(study.common_set):
        args += ["--set", item]
    if study.mode != "local":  # distributed runs side by side need their own ports: one block per job slot
        port = DIST_PORT_BASE + 10 * slot
        args += ["--set", f"dist.rollout_port={port}", "--set", f"dist.weights_port={port + 1}",
                 "--set", f"dist.control_port={port + 2}"]
    return args + ["--resume"] * resume


def effective_jobs(study: Study, requested: int | None) -> tuple[int, str]:
    """Runs at a time: the request (or study.jobs, or as many as fit), capped by the machine's cores."""
    cores = os.cpu_count() or 1
    fit = max(1, cores // (study.procs_per_run * study.threads))
    want = requested if requested else study.jobs or fit
    if want > fit:
        return fit, (f"{want} jobs of {study.procs_per_run} process(es) x {study.threads} thread(s) exceed "
                     f"{cores} cores: running {fit} at a time")
    return want, ""


def plan(study: Study, out: Path) -> list[tuple[RunSpec, str]]:
    """Each run with its state: finished, resume or new."""
    return [(run, run_state(out / "runs" / run.run_id, study.steps)) for run in study.runs]


def _plan_line(study: Study, states: Sequence[tuple[RunSpec, str]], n_jobs: int) -> str:
    """'study NAME: 21 runs (3 finished, 18 new), ...': the first line of every invocation."""
    counts = {s: sum(1 for _, st in states if st == s) for s in ("finished", "restore", "resume", "new")}
    return (f"study {study.name}: {len(states)} runs ({counts['finished']} finished, "
            + (f"{counts['restore']} to restore, " if counts["restore"] else "")
            + f"{counts['resume']} to resume, {counts['new']} new), {study.steps} env steps each, mode "
            f"{study.mode}, {n_jobs} at a time")


def _echo_dry_run(study: Study, out: Path, states: Sequence[tuple[RunSpec, str]], restore: Path | None,
                  echo: Callable[[str], None]) -> None:
    """Each run's state and the command that would continue it; then what follows the training."""
    for run, state in states:
        run_dir = out / "runs" / run.run_id
        action = f"{run.run_id} from {restore}" if state == "restore" else \
            cli_text(_train_args(run, study, run_dir, state == "resume"))
        echo(f"{state:>8}  {action}")
    echo(f"then: powernet evaluate on {study.eval_episodes} seeds from {study.eval_seed} for every run, and "
         f"{', '.join(study.controllers) or 'no controllers'} on {', '.join(study.systems)}")


def _run_passes(study: Study, out: Path, states: list[tuple[RunSpec, str]], n_jobs: int, train: bool,
                say: Callable[[str], None]) -> int:
    """Train, evaluate and run the controllers; returns the exit status (0 ok, 1 failures, 130 interrupted)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(study.threads), "MKL_NUM_THREADS": str(study.threads),
           "NUMBA_NUM_THREADS": str(study.threads), "PYTHONUNBUFFERED": "1"}
    try:
        with interruptible():
            failed = _train_all(study, out, states, n_jobs, env, say) if train else []
            failed += _evaluate_all(study, out, n_jobs, env, say)
            run_baselines(study, out, say)
    except (Interrupted, KeyboardInterrupt):
        say("interrupted: re-run the same command to continue (finished runs are skipped, the rest resume)")
        return 130
    if failed:
        say(f"finished with {len(failed)} failure(s): {', '.join(failed)}; re-run the same command to retry")
        return 1
    if not train:
        left = sum(1 for run in study.runs if run_state(out / "runs" / run.run_id, study.steps) != "finished")
        say(f"evaluated the finished runs; {left} run(s) left to train (the same command without --no-train)")
    else:
        say(f"study {study.name} complete; next: powernet report --study {out}")
    return 0


def run_study(study: Study, out: Path, jobs: int | None = None, dry_run: bool = False,
              echo: Callable[[str], None] = print, argv: Sequence[str] = (), train: bool = True,
              restore: Path | None = None) -> int:
    """Train, evaluate and run the baselines of a study; returns the exit status (0 ok, 1 failures,
    130 interrupted). restore: an archive (launch.study_archive) whose finished runs are copied in first;
    train=False evaluates what has finished and trains nothing (a study cut short, before archiving it)."""
    n_jobs, note = effective_jobs(study, jobs)
    restored: list[str] = []
    if restore is not None:
        from launch.study_archive import restore_study

        restored = restore_study(restore, out, study.steps, {run.run_id for run in study.runs}, dry_run=dry_run)
    states = [(run, "restore" if run.run_id in restored and dry_run else state) for run, state in plan(study, out)]
    header = _plan_line(study, states, n_jobs)
    if dry_run:
        echo(header + (f"\nnote: {note}" if note else ""))
        _echo_dry_run(study, out, states, restore, echo)
        return 0

    out.mkdir(parents=True, exist_ok=True)
    (out / "study.toml").write_text(study.path.read_text())
    log_fh = (out / "study.log").open("a")

    def say(text: str) -> None:
        line = f"[{datetime.now().strftime('%H:%M:%S')}] {text}"
        echo(line)
        log_fh.write(line + "\n")
        log_fh.flush()

    invocation = {"command": cli_text(argv) if argv else "", "started": now_text(), "commit": git_commit(),
                  "dirty": has_uncommitted_changes(), "machine": machine(), "jobs": n_jobs}
    say(header)
    if restore is not None:
        names = f": {', '.join(restored)}" if restored else ""
        say(f"restored {len(restored)} finished run(s) from {restore}{names}")
    if note:
        say(f"note: {note}")
    status = 0
    try:
        status = _run_passes(study, out, states, n_jobs, train, say)
    finally:
        invocation.update(ended=now_text(), exit_status=status)
        with (out / "invocations.jsonl").open("a") as fh:
            fh.write(json.dumps(invocation) + "\n")
        log_fh.close()
    return status


def _train_task(study: Study, run: RunSpec, state: str, run_dir: Path) -> Task:
    """The `powernet train` task of a run (new or resumed): each attempt recorded in study-run.json with its
    command, host and wall time, and FINISHED.json written when an attempt reaches the study's steps."""
    run_dir.mkdir(parents=True, exist_ok=True)
    spec_path = run_dir / RUN_SPEC
    record = read_json(spec_path) or _spec_record(run, study)
    record["steps"] = study.steps
    attempt: dict[str, Any] = {}
    resume = state == "resume"

    def on_start(proc: subprocess.Popen) -> None:
        attempt.update(started=now_text(), pid=proc.pid, resumed=resume,
                       start_env_steps=last_env_steps(run_dir / "metrics.csv") if resume else 0,
                       command=cli_text(proc.args[3:]), host=platform.node())
        record["attempts"].append(attempt)
        write_json(spec_path, record)

    def on_exit(rc: int, wall: float) -> None:
        reached = last_env_steps(run_dir / "metrics.csv")
        attempt.update(ended=now_text(), wall_s=round(wall, 2), exit_status=rc, end_env_steps=reached)
        write_json(spec_path, record)
        if rc == 0 and reached >= study.steps:
            wall_total = sum(a.get("wall_s", 0.0) for a in record["attempts"])
            write_json(run_dir / FINISHED, {"env_steps": reached, "finished": now_text(),
                                            "attempts": len(record["attempts"]),
                                            "train_wall_s": round(wall_total, 2)})

    def progress() -> str:
        return f"{100.0 * last_env_steps(run_dir / 'metrics.csv') / study.steps:.0f}%"

    def work() -> tuple[int, int]:
        return last_env_steps(run_dir / "metrics.csv"), study.steps

    def make(slot: int) -> list[str]:
        return _train_args(run, study, run_dir, resume, slot)

    name = run.run_id + (" (resume)" if resume else "")
    return Task(name, make, run_dir / "logs" / "study-train.log", on_start, on_exit, progress, work)


def _train_all(study: Study, out: Path, states: list[tuple[RunSpec, str]], jobs: int, env: Mapping[str, str],
               say: Callable[[str], None]) -> list[str]:
    """Train every run that has not finished; returns the names of the failed ones."""
    tasks = []
    for run, state in states:
        if state == "finished":
            say(f"skip {run.run_id}: finished")
            continue
        tasks.append(_train_task(study, run, state, out / "runs" / run.run_id))
    if not tasks:
        return []
    return run_tasks(tasks, jobs, say, study.progress_every_s, env, "train")


def _evaluate_all(study: Study, out: Path, jobs: int, env: Mapping[str, str],
                  say: Callable[[str], None]) -> list[str]:
    """`powernet evaluate` every finished run whose evaluation is not current; returns the failed ones."""
    tasks = []
    for run in study.runs:
        run_dir = out / "runs" / run.run_id
        if run_state(run_dir, study.steps) != "finished" or eval_is_current(run_dir, study.eval_seeds):
            continue
        eval_args = ["evaluate", "--run", str(run_dir), "--episodes", str(study.eval_episodes),
                     "--seed", str(study.eval_seed)]
        tasks.append(Task(f"eval {run.run_id}", lambda slot, a=eval_args: a, run_dir / "logs" / "study-eval.log",
                          on_exit=_bind_eval_exit(run_dir / RUN_SPEC, run, study, eval_args)))
    if not tasks:
        return []
    return run_tasks(tasks, jobs, say, study.progress_every_s, env, "evaluate")


def _bind_eval_exit(spec_path: Path, run: RunSpec, study: Study, args: list[str]) -> Callable[[int, float], None]:
    """An evaluation's exit handler: its command and wall time appended to the run's study-run.json."""

    def on_exit(rc: int, wall: float) -> None:
        record = read_json(spec_path) or _spec_record(run, study)
        record.setdefault("evaluations", []).append({"ended": now_text(), "wall_s": round(wall, 2),
                                                     "exit_status": rc, "command": cli_text(args)})
        write_json(spec_path, record)

    return on_exit
