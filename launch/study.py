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
`powernet report --archive`, then `powernet study --restore`).
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from common.config import ALGORITHMS, SYSTEMS, load_config
from common.errors import InputError
from common.tomlfile import read_toml

REPO_ROOT = Path(__file__).resolve().parent.parent
SHORT_SYSTEM = {"microgrid-6": "mg6", "microgrid-20": "mg20", "toy-graph": "toy"}
KEY_TAGS = {"train.spatial_discount": "alpha", "env.smoothing_beta": "beta"}
ALPHA_KEY, BETA_KEY = "train.spatial_discount", "env.smoothing_beta"
CONTROLLER_CHOICES = ("droop", "secondary", "random")
FINISHED = "FINISHED.json"
RUN_SPEC = "study-run.json"
DIST_PORT_BASE = 25555  # sync/async runs of job slot k use ports 25555 + 10 k, +1, +2
GRACE_S = 15.0  # SIGINT -> SIGTERM -> SIGKILL escalation of a child's process group

# key: (type, default, required, help); `None` default with required=False means "derived"
STUDY_KEYS: dict[str, tuple[type, Any, bool, str]] = {
    "name": (str, None, False, "study name (default: the config file's stem)"),
    "algorithms": (list, None, True, "algorithms to train, e.g. [\"powernet\", \"ia2c\"]"),
    "systems": (list, None, True, "systems, e.g. [\"microgrid-6\"]"),
    "seeds": (list, None, True, "training seeds (train.seed), e.g. [0, 1, 2]"),
    "steps": (int, None, True, "environment steps per run"),
    "mode": (str, "local", False, "training mode: local, sync or async"),
    "jobs": (int, 0, False, "runs at a time (0: as many as the machine's cores allow)"),
    "threads": (int, 1, False, "torch/OpenMP threads of each training process"),
    "config": (str, "configs/{algorithm}_{short}.toml", False,
               "base config of a run; {algorithm}, {system} and {short} (mg6, mg20, toy) are filled in"),
    "set": (list, [], False, "overrides applied to every run, as `--set` strings"),
    "eval_episodes": (int, 20, False, "greedy evaluation episodes per run"),
    "eval_seed": (int, 2000, False, "first evaluation seed; episode k uses eval_seed + 25 k"),
    "controllers": (list, ["droop", "secondary"], False, "conventional controllers evaluated per system"),
    "progress_every_s": (float, 60.0, False, "seconds between progress lines while runs train"),
}


@dataclass(frozen=True)
class RunSpec:
    """One training run of the grid."""

    run_id: str
    algorithm: str
    system: str
    tag: str
    overrides: dict[str, Any]
    seed: int
    base_config: str

    def set_args(self, common: Sequence[str]) -> list[str]:
        """The `--set` strings of this run: the study's common ones, the override set, the seed."""
        return [*common, *(f"{k}={_toml_value(v)}" for k, v in self.overrides.items()), f"train.seed={self.seed}"]


@dataclass
class Study:
    """A validated study config and the runs it expands to."""

    name: str
    path: Path
    algorithms: list[str]
    systems: list[str]
    seeds: list[int]
    steps: int
    mode: str
    jobs: int
    threads: int
    config: str
    common_set: list[str]
    eval_episodes: int
    eval_seed: int
    controllers: list[str]
    progress_every_s: float
    override_sets: list[tuple[str, dict[str, Any]]]
    runs: list[RunSpec] = field(default_factory=list)
    procs_per_run: int = 1

    @property
    def eval_seeds(self) -> list[int]:
        from launch.evaluate import SEED_STRIDE

        return [self.eval_seed + SEED_STRIDE * k for k in range(self.eval_episodes)]


def _toml_value(value: Any) -> str:
    """A value as TOML text, the form `--set` parses."""
    import tomli_w

    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def _flatten(table: Mapping[str, Any], where: str, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1}} and {"train.lr": 1} both become {"train.lr": 1}."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, where, full + "."))
        else:
            if full.count(".") != 1:
                raise InputError(f"{where}: key {full!r} must be section.key, e.g. train.spatial_discount")
            flat[full] = value
    return flat


def _format_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:g}"


def override_tag(overrides: Mapping[str, Any]) -> str:
    """A short directory-safe tag of an override set, e.g. alpha0.9-beta0.2; `base` when empty."""
    if not overrides:
        return "base"
    parts = [f"{KEY_TAGS.get(k, k.split('.', 1)[1])}{_format_value(v)}" for k, v in overrides.items()]
    return _safe("-".join(parts))


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in ".+-=" else "-" for c in text)


def _typed(key: str, value: Any, kind: type, where: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise InputError(f"{where}: study.{key} must be a {kind.__name__}, got {value!r}")
    return value


def _list_of(key: str, values: list, kind: type, where: str, choices: Sequence[str] | None = None) -> list:
    if not values:
        raise InputError(f"{where}: study.{key} must not be empty")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, kind):
            raise InputError(f"{where}: study.{key} must list {kind.__name__}s, got {v!r}")
        if choices is not None and v not in choices:
            raise InputError(f"{where}: study.{key}: {v!r} is not one of {', '.join(choices)}")
    if len(set(values)) != len(values):
        raise InputError(f"{where}: study.{key} lists a value twice")
    return list(values)


def _override_sets(doc: Mapping[str, Any], where: str) -> list[tuple[str, dict[str, Any]]]:
    """[grid] (a cartesian product of key -> values) times [[variant]] (explicit override sets)."""
    grid = _flatten(doc.get("grid", {}), f"{where} [grid]")
    axes = []
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise InputError(f"{where} [grid]: {key} must be a non-empty list of values")
        axes.append([(key, v) for v in values])
    grid_sets = [dict(combo) for combo in itertools.product(*axes)] if axes else [{}]
    variants: list[tuple[str | None, dict[str, Any]]] = []
    raw = doc.get("variant", [])
    if not isinstance(raw, list):
        raise InputError(f"{where}: variant must be an array of tables ([[variant]])")
    for k, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise InputError(f"{where}: variant {k + 1} must be a table")
        unknown = set(item) - {"tag", "set"}
        if unknown:
            raise InputError(f"{where}: unknown key variant.{sorted(unknown)[0]} (known: tag, set)")
        tag = item.get("tag")
        if tag is not None and (not isinstance(tag, str) or not tag or _safe(tag) != tag):
            raise InputError(f"{where}: variant {k + 1}: tag must be a non-empty name of letters, digits, "
                             f"'.', '+', '-', '=' (got {tag!r})")
        variants.append((tag, _flatten(item.get("set", {}), f"{where} variant {k + 1}")))
    if not variants:
        variants = [(None, {})]
    sets = []
    for (vtag, vset), gset in itertools.product(variants, grid_sets):
        both = set(vset) & set(gset)
        if both:
            raise InputError(f"{where}: {sorted(both)[0]} is set by both [grid] and a [[variant]]")
        tags = [t for t in (vtag, override_tag(gset) if gset else None) if t]
        sets.append(("-".join(tags) if tags else override_tag(vset), {**vset, **gset}))
    tags_seen = [t for t, _ in sets]
    if len(set(tags_seen)) != len(tags_seen):
        raise InputError(f"{where}: two override sets share the tag {_first_duplicate(tags_seen)!r}; name them "
                         "with variant tags")
    return sets


def _first_duplicate(items: Sequence[str]) -> str:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return ""


def resolve_config_path(pattern: str, algorithm: str, system: str) -> Path:
    """The base config of a run: relative paths are tried from the working directory, then the repository."""
    text = pattern.format(algorithm=algorithm, system=system, short=SHORT_SYSTEM.get(system, system))
    path = Path(text)
    if not path.is_absolute() and not path.is_file() and (REPO_ROOT / path).is_file():
        return REPO_ROOT / path
    return path


def load_study(path: str | Path) -> Study:
    """Read and validate a study config, expand its grid and check every run's resolved training config."""
    path = Path(path)
    where = str(path)
    doc = read_toml(path, "study config")
    unknown = set(doc) - {"study", "grid", "variant"}
    if unknown:
        raise InputError(f"{where}: unknown section {sorted(unknown)[0]!r} (known: study, grid, variant)")
    section = doc.get("study")
    if not isinstance(section, Mapping):
        raise InputError(f"{where}: missing the [study] table")
    bad = set(section) - set(STUDY_KEYS)
    if bad:
        raise InputError(f"{where}: unknown key study.{sorted(bad)[0]} (known: {', '.join(STUDY_KEYS)})")
    values: dict[str, Any] = {}
    for key, (kind, default, required, _help) in STUDY_KEYS.items():
        if key not in section:
            if required:
                raise InputError(f"{where}: missing key study.{key} ({_help})")
            values[key] = default
            continue
        values[key] = _typed(key, section[key], kind, where)
    algorithms = _list_of("algorithms", values["algorithms"], str, where, ALGORITHMS)
    systems = _list_of("systems", values["systems"], str, where, SYSTEMS)
    seeds = _list_of("seeds", values["seeds"], int, where)
    controllers = _list_of("controllers", values["controllers"], str, where, CONTROLLER_CHOICES) \
        if values["controllers"] else []
    common_set = values["set"]
    if any(not isinstance(s, str) for s in common_set):
        raise InputError(f"{where}: study.set must list strings such as \"train.num_envs=4\"")
    if values["mode"] not in ("local", "sync", "async"):
        raise InputError(f"{where}: study.mode must be local, sync or async, got {values['mode']!r}")
    for key in ("steps", "threads", "eval_episodes"):
        if values[key] < 1:
            raise InputError(f"{where}: study.{key} must be at least 1")
    if values["jobs"] < 0 or min(seeds) < 0 or values["eval_seed"] < 0:
        raise InputError(f"{where}: study.jobs, study.seeds and study.eval_seed must not be negative")
    if values["progress_every_s"] <= 0:
        raise InputError(f"{where}: study.progress_every_s must be positive")
    study = Study(
        name=values["name"] or path.stem, path=path, algorithms=algorithms, systems=systems, seeds=seeds,
        steps=values["steps"], mode=values["mode"], jobs=values["jobs"], threads=values["threads"],
        config=values["config"], common_set=common_set, eval_episodes=values["eval_episodes"],
        eval_seed=values["eval_seed"], controllers=controllers, progress_every_s=values["progress_every_s"],
        override_sets=_override_sets(doc, where))
    checked: set[tuple[str, str, str]] = set()
    # seed-major order: every configuration gets its first seed before any gets a second, so a study cut
    # short still covers the whole grid
    for seed, system, algorithm, (tag, overrides) in itertools.product(seeds, systems, algorithms,
                                                                        study.override_sets):
        base = resolve_config_path(study.config, algorithm, system)
        run = RunSpec(f"{algorithm}_{SHORT_SYSTEM.get(system, _safe(system))}_{tag}_s{seed}", algorithm, system,
                      tag, overrides, seed, str(base))
        study.runs.append(run)
        if (system, algorithm, tag) in checked:
            continue
        checked.add((system, algorithm, tag))
        try:
            cfg = load_config(base, [*run.set_args(common_set), f"train.steps={study.steps}"])
        except InputError as exc:
            raise InputError(f"{where}: run {run.run_id}: {exc}") from exc
        if cfg.env.system != system or cfg.model.algorithm != algorithm:
            raise InputError(f"{where}: run {run.run_id}: base config {base} is {cfg.model.algorithm} on "
                             f"{cfg.env.system}, not {algorithm} on {system}")
        if study.mode != "local":
            study.procs_per_run = max(study.procs_per_run, 1 + cfg.dist.actors)
    return study


# ----------------------------------------------------------------------------------------------- run state

def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON atomically (a temporary file renamed over the target)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def last_env_steps(metrics: Path) -> int:
    """env_steps of the last row of a metrics.csv (0 when absent or empty), read from the file's tail."""
    try:
        with metrics.open("rb") as fh:
            header = fh.readline().decode().strip().split(",")
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 8192))
            lines = [ln for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return 0
    if "env_steps" not in header or len(lines) < 2:
        return 0
    col = header.index("env_steps")
    for line in reversed(lines):
        cells = line.split(",")
        try:
            return int(float(cells[col]))
        except (IndexError, ValueError):
            continue
    return 0


def checkpoint_env_steps(run_dir: Path) -> int:
    """env_steps stored in the run's latest checkpoint (0 when it has none)."""
    latest = run_dir / "checkpoints" / "latest.pt"
    if not latest.is_file():
        return 0
    from learner.checkpoint import load_checkpoint

    try:
        return int(load_checkpoint(latest).get("env_steps", 0))
    except Exception:  # noqa: BLE001 - an unreadable checkpoint means "not finished"
        return 0


def run_state(run_dir: Path, steps: int) -> str:
    """finished, resume (a checkpoint to continue from) or new."""
    marker = _read_json(run_dir / FINISHED)
    if marker is not None and int(marker.get("env_steps", 0)) >= steps:
        return "finished"
    if not (run_dir / "checkpoints" / "latest.pt").is_file():
        return "new"
    if marker is None and last_env_steps(run_dir / "metrics.csv") >= steps:
        done = checkpoint_env_steps(run_dir)  # trained outside the study, or the marker was never written
        if done >= steps:
            _write_json(run_dir / FINISHED, {"env_steps": done, "note": "found finished (no study marker)"})
            return "finished"
    return "resume"


def eval_is_current(run_dir: Path, study: Study) -> bool:
    """True when run/eval/summary.json used the study's seeds and is newer than the latest checkpoint, or the
    run has no checkpoint (restored from an archive: its evaluation is the last there will be)."""
    summary_path = run_dir / "eval" / "summary.json"
    latest = run_dir / "checkpoints" / "latest.pt"
    summary = _read_json(summary_path)
    if summary is None or summary.get("seeds") != study.eval_seeds or summary.get("checkpoint") != "latest":
        return False
    return not latest.is_file() or summary_path.stat().st_mtime >= latest.stat().st_mtime


# ------------------------------------------------------------------------------------------ provenance

def git_commit() -> tuple[str, bool]:
    """(HEAD commit of the repository, whether tracked files outside results/ have uncommitted changes);
    results/ holds reports, which change by being written, not the code that produced them."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                                  cwd=REPO_ROOT).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD") or "unknown"
    return commit, bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"))


def machine() -> dict[str, Any]:
    """Host name, CPU model, core count, OS and Python of this machine."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count() or 1, "os": platform.platform(),
            "python": platform.python_version()}


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def cli_text(args: Sequence[str]) -> str:
    """A `powernet ...` command line (what `python -m launch ...` runs)."""
    return "powernet " + shlex.join(args)


# --------------------------------------------------------------------------------------------- runner

class Interrupted(Exception):
    """Ctrl-C or SIGTERM reached the study; children have been stopped."""


@dataclass
class Task:
    """A subprocess the scheduler runs: `make_args(slot)` after `python -m launch`, output appended to `log`
    (slot: which of the `jobs` places it runs in)."""

    name: str
    make_args: Callable[[int], list[str]]
    log: Path
    on_start: Callable[[subprocess.Popen], None] = lambda proc: None
    on_exit: Callable[[int, float], None] = lambda rc, wall: None
    progress: Callable[[], str] = lambda: ""
    work: Callable[[], tuple[int, int]] | None = None  # (units done, units in all), e.g. env steps; for the ETA


@dataclass
class _Running:
    task: Task
    proc: subprocess.Popen
    log: TextIO
    t0: float
    slot: int
    units0: int = 0  # work units done when this attempt started


def estimate_left_s(units_done: float, busy_s: float, units_left: float, parallel: int) -> float | None:
    """Seconds until `units_left` are done at the rate seen so far (units_done in busy_s seconds of one job),
    with `parallel` jobs side by side; None before there is a rate to go by."""
    if units_done <= 0 or busy_s <= 0 or parallel < 1:
        return None
    return units_left / (units_done / busy_s) / parallel


def format_duration(seconds: float) -> str:
    """'2 h 05 min', '14 min', 'under a minute'."""
    minutes = int(round(seconds / 60))
    if minutes < 1:
        return "under a minute"
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def _child_setup() -> None:
    """In the child before exec: default SIGINT (so Python raises KeyboardInterrupt even when the study was
    started with SIGINT ignored), and SIGTERM when the study process dies (Linux), so no run outlives it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def stop_group(proc: subprocess.Popen, grace_s: float = GRACE_S) -> None:
    """Stop a child and its own children: SIGINT to its process group, then SIGTERM, then SIGKILL."""
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        except KeyboardInterrupt:  # a second Ctrl-C: go straight to SIGKILL
            continue
        break
    try:  # whatever of the group is left (e.g. actors of a sync run whose supervisor already exited)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C and SIGTERM both raise KeyboardInterrupt in the study process while inside the block."""
    def raise_interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    old_term = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def run_tasks(tasks: Sequence[Task], jobs: int, say: Callable[[str], None], progress_every_s: float,
              env: Mapping[str, str], label: str) -> list[str]:
    """Run tasks `jobs` at a time; returns the names of failed tasks. On Ctrl-C/SIGTERM every running child
    group is stopped and Interrupted raised."""
    queue = list(tasks)
    running: list[_Running] = []
    failed: list[str] = []
    done = 0
    units_done, busy_s = 0, 0.0  # work finished by ended attempts of this invocation, and their job-seconds
    next_report = time.monotonic() + progress_every_s
    try:
        while queue or running:
            free = sorted(set(range(jobs)) - {r.slot for r in running})
            while queue and free:
                task = queue.pop(0)
                slot = free.pop(0)
                args = task.make_args(slot)
                task.log.parent.mkdir(parents=True, exist_ok=True)
                log = task.log.open("a")
                log.write(f"\n===== {_now()} {cli_text(args)}\n")
                log.flush()
                proc = subprocess.Popen([sys.executable, "-m", "launch", *args], stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=dict(env),
                                        start_new_session=True, preexec_fn=_child_setup)
                running.append(_Running(task, proc, log, time.monotonic(), slot,
                                        task.work()[0] if task.work is not None else 0))
                task.on_start(proc)
            for item in list(running):
                rc = item.proc.poll()
                if rc is None:
                    continue
                running.remove(item)
                item.log.close()
                wall = time.monotonic() - item.t0
                if item.task.work is not None:
                    units_done += item.task.work()[0] - item.units0
                    busy_s += wall
                done += 1
                if rc != 0:
                    failed.append(item.task.name)
                    say(f"{label} {done}/{len(tasks)}: {item.task.name} FAILED (exit {rc}); see {item.task.log}")
                else:
                    say(f"{label} {done}/{len(tasks)}: {item.task.name} done in {wall:.0f} s")
                item.task.on_exit(rc, wall)
            if running and time.monotonic() >= next_report:
                next_report = time.monotonic() + progress_every_s
                states = ", ".join(f"{r.task.name} {r.task.progress()}".strip() for r in running)
                line = f"{label}: {done}/{len(tasks)} done, {len(queue)} queued; running: {states}"
                left = _time_left(running, queue, units_done, busy_s, jobs)
                say(line + (f"; about {format_duration(left)} left" if left is not None else ""))
            time.sleep(0.1)
    except KeyboardInterrupt:
        say(f"interrupted: stopping {len(running)} running process group(s)")
        for item in running:
            stop_group(item.proc)
            item.log.close()
            item.task.on_exit(item.proc.returncode if item.proc.returncode is not None else -signal.SIGINT,
                              time.monotonic() - item.t0)
        raise Interrupted from None
    return failed


def _time_left(running: Sequence[_Running], queue: Sequence[Task], units_done: int, busy_s: float,
               jobs: int) -> float | None:
    """The ETA of the tasks that report work: their units still to do at the rate of this invocation so far."""
    now = time.monotonic()
    left = 0
    for item in running:
        if item.task.work is not None:
            have, total = item.task.work()
            units_done += have - item.units0
            busy_s += now - item.t0
            left += max(0, total - have)
    for task in queue:
        if task.work is not None:
            have, total = task.work()
            left += max(0, total - have)
    return estimate_left_s(units_done, busy_s, left, min(jobs, len(running) + len(queue)))


def _spec_record(run: RunSpec, study: Study) -> dict[str, Any]:
    return {"run_id": run.run_id, "algorithm": run.algorithm, "system": run.system, "tag": run.tag,
            "overrides": run.overrides, "seed": run.seed, "steps": study.steps, "mode": study.mode,
            "base_config": run.base_config, "attempts": [], "evaluations": []}


def _train_args(run: RunSpec, study: Study, run_dir: Path, resume: bool, slot: int = 0) -> list[str]:
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
    counts = {s: sum(1 for _, st in states if st == s) for s in ("finished", "restore", "resume", "new")}
    header = (f"study {study.name}: {len(states)} runs ({counts['finished']} finished, "
              + (f"{counts['restore']} to restore, " if counts["restore"] else "")
              + f"{counts['resume']} to resume, {counts['new']} new), {study.steps} env steps each, mode "
              f"{study.mode}, {n_jobs} at a time")
    if dry_run:
        echo(header + (f"\nnote: {note}" if note else ""))
        for run, state in states:
            run_dir = out / "runs" / run.run_id
            action = f"{run.run_id} from {restore}" if state == "restore" else \
                cli_text(_train_args(run, study, run_dir, state == "resume"))
            echo(f"{state:>8}  {action}")
        echo(f"then: powernet evaluate on {study.eval_episodes} seeds from {study.eval_seed} for every run, and "
             f"{', '.join(study.controllers) or 'no controllers'} on {', '.join(study.systems)}")
        return 0

    out.mkdir(parents=True, exist_ok=True)
    (out / "study.toml").write_text(study.path.read_text())
    log_fh = (out / "study.log").open("a")

    def say(text: str) -> None:
        line = f"[{datetime.now().strftime('%H:%M:%S')}] {text}"
        echo(line)
        log_fh.write(line + "\n")
        log_fh.flush()

    commit, dirty = git_commit()
    invocation = {"command": cli_text(argv) if argv else "", "started": _now(), "commit": commit,
                  "dirty": dirty, "machine": machine(), "jobs": n_jobs}
    say(header)
    if restore is not None:
        names = f": {', '.join(restored)}" if restored else ""
        say(f"restored {len(restored)} finished run(s) from {restore}{names}")
    if note:
        say(f"note: {note}")
    env = {**os.environ, "OMP_NUM_THREADS": str(study.threads), "MKL_NUM_THREADS": str(study.threads),
           "NUMBA_NUM_THREADS": str(study.threads), "PYTHONUNBUFFERED": "1"}
    status = 0
    try:
        with _interruptible():
            failed = _train_all(study, out, states, n_jobs, env, say) if train else []
            failed += _evaluate_all(study, out, n_jobs, env, say)
            _baselines(study, out, say)
        if failed:
            say(f"finished with {len(failed)} failure(s): {', '.join(failed)}; re-run the same command to retry")
            status = 1
        elif not train:
            left = sum(1 for run in study.runs if run_state(out / "runs" / run.run_id, study.steps) != "finished")
            say(f"evaluated the finished runs; {left} run(s) left to train (the same command without --no-train)")
        else:
            say(f"study {study.name} complete; next: powernet report --study {out}")
    except (Interrupted, KeyboardInterrupt):
        say("interrupted: re-run the same command to continue (finished runs are skipped, the rest resume)")
        status = 130
    finally:
        invocation.update(ended=_now(), exit_status=status)
        with (out / "invocations.jsonl").open("a") as fh:
            fh.write(json.dumps(invocation) + "\n")
        log_fh.close()
    return status


def _train_all(study: Study, out: Path, states: list[tuple[RunSpec, str]], jobs: int, env: Mapping[str, str],
               say: Callable[[str], None]) -> list[str]:
    tasks = []
    for run, state in states:
        run_dir = out / "runs" / run.run_id
        if state == "finished":
            say(f"skip {run.run_id}: finished")
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        spec_path = run_dir / RUN_SPEC
        record = _read_json(spec_path) or _spec_record(run, study)
        record["steps"] = study.steps
        attempt: dict[str, Any] = {}

        def on_start(proc: subprocess.Popen, run_dir: Path = run_dir, record: dict = record,
                     attempt: dict = attempt, state: str = state, spec_path: Path = spec_path) -> None:
            attempt.update(started=_now(), pid=proc.pid, resumed=state == "resume",
                           start_env_steps=last_env_steps(run_dir / "metrics.csv") if state == "resume" else 0,
                           command=cli_text(proc.args[3:]), host=platform.node())
            record["attempts"].append(attempt)
            _write_json(spec_path, record)

        def on_exit(rc: int, wall: float, run_dir: Path = run_dir, record: dict = record, attempt: dict = attempt,
                    spec_path: Path = spec_path) -> None:
            reached = last_env_steps(run_dir / "metrics.csv")
            attempt.update(ended=_now(), wall_s=round(wall, 2), exit_status=rc, end_env_steps=reached)
            _write_json(spec_path, record)
            if rc == 0 and reached >= study.steps:
                wall_total = sum(a.get("wall_s", 0.0) for a in record["attempts"])
                _write_json(run_dir / FINISHED, {"env_steps": reached, "finished": _now(),
                                                 "attempts": len(record["attempts"]),
                                                 "train_wall_s": round(wall_total, 2)})

        def progress(run_dir: Path = run_dir) -> str:
            return f"{100.0 * last_env_steps(run_dir / 'metrics.csv') / study.steps:.0f}%"

        def work(run_dir: Path = run_dir) -> tuple[int, int]:
            return last_env_steps(run_dir / "metrics.csv"), study.steps

        def make(slot: int, run: RunSpec = run, run_dir: Path = run_dir, resume: bool = state == "resume"
                 ) -> list[str]:
            return _train_args(run, study, run_dir, resume, slot)

        name = run.run_id + (" (resume)" if state == "resume" else "")
        tasks.append(Task(name, make, run_dir / "logs" / "study-train.log", on_start, on_exit, progress, work))
    if not tasks:
        return []
    return run_tasks(tasks, jobs, say, study.progress_every_s, env, "train")


def _evaluate_all(study: Study, out: Path, jobs: int, env: Mapping[str, str],
                  say: Callable[[str], None]) -> list[str]:
    tasks = []
    for run in study.runs:
        run_dir = out / "runs" / run.run_id
        if run_state(run_dir, study.steps) != "finished" or eval_is_current(run_dir, study):
            continue
        eval_args = ["evaluate", "--run", str(run_dir), "--episodes", str(study.eval_episodes),
                     "--seed", str(study.eval_seed)]
        tasks.append(Task(f"eval {run.run_id}", lambda slot, a=eval_args: a, run_dir / "logs" / "study-eval.log",
                          on_exit=_bind_eval_exit(run_dir / RUN_SPEC, run, study, eval_args)))
    if not tasks:
        return []
    return run_tasks(tasks, jobs, say, study.progress_every_s, env, "evaluate")


def _bind_eval_exit(spec_path: Path, run: RunSpec, study: Study, args: list[str]) -> Callable[[int, float], None]:
    def on_exit(rc: int, wall: float) -> None:
        record = _read_json(spec_path) or _spec_record(run, study)
        record.setdefault("evaluations", []).append({"ended": _now(), "wall_s": round(wall, 2),
                                                     "exit_status": rc, "command": cli_text(args)})
        _write_json(spec_path, record)

    return on_exit


def _baselines(study: Study, out: Path, say: Callable[[str], None]) -> None:
    """The conventional controllers on the evaluation seeds, once per system (skipped when current)."""
    import numpy as np

    seeds = study.eval_seeds
    for system_name in study.systems:
        if system_name == "toy-graph":
            continue  # no physical grid, so no conventional controllers
        for controller in study.controllers:
            target = out / "baselines" / system_name / controller
            existing = _read_json(target / "summary.json")
            if existing is not None and existing.get("seeds") == seeds:
                continue
            t0 = time.monotonic()
            rows = baseline_episodes(system_name, controller, seeds, target)
            returns = np.array([r["return"] for r in rows])
            summary = {"controller": controller, "system": system_name, "episodes": len(rows), "seeds": seeds,
                       "mean_return": float(returns.mean()), "std_return": float(returns.std()),
                       "violation_rate": float(np.mean([r["violation_rate"] for r in rows])),
                       "mean_settling_step": float(np.mean([r["settling_step"] for r in rows])),
                       "max_dev_pu": float(np.max([r["max_dev_pu"] for r in rows])),
                       "wall_s": round(time.monotonic() - t0, 2), "per_episode": rows}
            _write_json(target / "summary.json", summary)
            say(f"baseline {controller} on {system_name}: mean return {summary['mean_return']:.3f}, "
                f"violation share {summary['violation_rate']:.3f}")


def baseline_episodes(system_name: str, controller: str, seeds: Sequence[int], out: Path) -> list[dict[str, Any]]:
    """Run a conventional controller on each seed (loads fixed within an episode, as the greedy evaluation);
    write episode-<seed>.npz (v_pu, rewards: [T, N]) and return the per-episode metrics."""
    import numpy as np

    from simsvc.episodes import run_episode
    from simsvc.systems import load_system

    system = load_system(system_name)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in seeds:
        result = run_episode(system, controller, seed, disturbance="episode")
        np.savez_compressed(out / f"episode-{seed}.npz", seed=seed, v_pu=result.v_pu, rewards=result.rewards)
        rows.append({"seed": seed, **result.summary})
    return rows
