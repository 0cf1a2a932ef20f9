"""A study config (`powernet study -c FILE`): its TOML schema, its validation, and the list of runs it
expands to (algorithm x system x override set x training seed), each with its base config and run id.

Run ids name the run directories (`runs/<id>/`), which `powernet study --restore` matches by name against an
archive; the id of a run must therefore stay what it was when the archive was written.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.algorithms import ALGORITHMS
from common.config import load_config
from common.errors import InputError
from common.tomlfile import read_toml
from launch.eval_protocol import evaluation_seeds
from simsvc.controllers import CONTROLLERS
from simsvc.systems import resolve_system_path

REPO_ROOT = Path(__file__).resolve().parent.parent
KEY_TAGS = {"train.spatial_discount": "alpha", "env.smoothing_beta": "beta"}
ALPHA_KEY, BETA_KEY = "train.spatial_discount", "env.smoothing_beta"

STUDY_KEYS: dict[str, tuple[type, Any, bool, str]] = {
    "name": (str, None, False, "study name (default: the config file's stem)"),
    "algorithms": (list, None, True, "algorithms to train, e.g. [\"powernet\", \"ia2c\"]"),
    "systems": (list, None, True, "systems, e.g. [\"microgrid-6\"]"),
    "seeds": (list, None, True, "training seeds (train.seed), e.g. [0, 1, 2]"),
    "steps": (int, None, True, "environment steps per run"),
    "mode": (str, "local", False, "training mode: local, sync or async"),
    "jobs": (int, 0, False, "runs at a time (0: as many as the machine's cores allow)"),
    "threads": (int, 1, False, "torch/OpenMP threads of each training process"),
    "config": (str, "configs/{algorithm}.toml", False,
               "base config of a run; {algorithm}, {system} and {short} (e.g. mg6 for microgrid-6) are filled "
               "in; the run's env.system is always the study's system"),
    "set": (list, [], False, "overrides applied to every run, as `--set` strings"),
    "preset": (str, "", False, "training preset of every run (paper, tuned, tuned-lr or a preset file; "
               "configs/presets/); study.set overrides it"),
    "eval_episodes": (int, 20, False, "greedy evaluation episodes per run"),
    "eval_seed": (int, 2000, False, "first evaluation seed; episode k uses eval_seed + 25 k"),
    "controllers": (list, ["droop", "secondary", "local", "oracle"], False,
                    "baseline controllers evaluated per system (constant and per-dg need `powernet fit-baselines`)"),
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
        """The `--set` strings of this run: its system, the study's common ones, the override set, the seed."""
        return [f"env.system={_toml_value(self.system)}", *common,
                *(f"{k}={_toml_value(v)}" for k, v in self.overrides.items()), f"train.seed={self.seed}"]


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
        return evaluation_seeds(self.eval_seed, self.eval_episodes)


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
    text = pattern.format(algorithm=algorithm, system=system, short=short_name(system))
    path = Path(text)
    if not path.is_absolute() and not path.is_file() and (REPO_ROOT / path).is_file():
        return REPO_ROOT / path
    return path


def short_name(system: str) -> str:
    """A system's short tag in run ids: mgN for microgrid-N, else the directory-safe name or file stem."""
    stem = Path(system).stem if system.endswith(".toml") else system
    found = re.fullmatch(r"microgrid-(\d+)", stem)
    return f"mg{found.group(1)}" if found else _safe(stem)


def run_id(algorithm: str, system: str, tag: str, seed: int) -> str:
    """The name of a run's directory, e.g. powernet_mg6_base_s0 (archives are matched by it)."""
    return f"{algorithm}_{short_name(system)}_{tag}_s{seed}"


def _study_values(doc: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The [study] table's values, each of its key's type, defaults filled in."""
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
    return values


def _systems(values: list, where: str) -> list[str]:
    """study.systems: each a shipped system's name or a path to a system file."""
    systems = _list_of("systems", values, str, where)
    for system in systems:
        try:
            resolve_system_path(system)
        except InputError as exc:
            raise InputError(f"{where}: study.systems: {exc}") from exc
    return systems


def _check_numbers(values: Mapping[str, Any], seeds: Sequence[int], where: str) -> None:
    """The mode, the set strings and the ranges of the numeric keys."""
    if any(not isinstance(s, str) for s in values["set"]):
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


def _add_runs(study: Study, where: str) -> None:
    """Expand the grid into study.runs and check the resolved training config of each configuration."""
    checked: set[tuple[str, str, str]] = set()
    # seed-major order: every configuration gets its first seed before any gets a second, so a study cut
    # short still covers the whole grid
    for seed, system, algorithm, (tag, overrides) in itertools.product(study.seeds, study.systems,
                                                                        study.algorithms, study.override_sets):
        base = resolve_config_path(study.config, algorithm, system)
        run = RunSpec(run_id(algorithm, system, tag, seed), algorithm, system, tag, overrides, seed, str(base))
        study.runs.append(run)
        if (system, algorithm, tag) in checked:
            continue
        checked.add((system, algorithm, tag))
        try:
            cfg = load_config(base, [*run.set_args(study.common_set), f"train.steps={study.steps}"])
            from simsvc.scenarios import load_scenario  # stdlib only: no simulator

            load_scenario(cfg.env.scenario)
        except InputError as exc:
            raise InputError(f"{where}: run {run.run_id}: {exc}") from exc
        if cfg.env.system != system or cfg.model.algorithm != algorithm:
            raise InputError(f"{where}: run {run.run_id}: base config {base} is {cfg.model.algorithm} on "
                             f"{cfg.env.system}, not {algorithm} on {system}")
        if study.mode != "local":
            study.procs_per_run = max(study.procs_per_run, 1 + cfg.dist.actors)


def _preset_sets(preset: str) -> list[str]:
    """A study's preset as `--set` strings (none without one)."""
    from launch.presets import preset_overrides

    return preset_overrides(preset) if preset else []


def _check_fitted(systems: Sequence[str], controllers: Sequence[str], where: str) -> None:
    """Fitted baselines need their fitted set-points: say so before any run starts, not at the end."""
    from simsvc.controllers import FITTED, fitted_setpoints
    from simsvc.systems import load_system

    for system in systems:
        for controller in set(controllers) & set(FITTED):
            try:
                fitted_setpoints(load_system(system), controller)
            except InputError as exc:
                raise InputError(f"{where}: study.controllers: {exc}") from exc


def load_study(path: str | Path) -> Study:
    """Read and validate a study config, expand its grid and check every run's resolved training config."""
    path = Path(path)
    where = str(path)
    doc = read_toml(path, "study config")
    values = _study_values(doc, where)
    algorithms = _list_of("algorithms", values["algorithms"], str, where, ALGORITHMS)
    systems = _systems(values["systems"], where)
    seeds = _list_of("seeds", values["seeds"], int, where)
    controllers = _list_of("controllers", values["controllers"], str, where, CONTROLLERS) \
        if values["controllers"] else []
    _check_numbers(values, seeds, where)
    _check_fitted(systems, controllers, where)
    study = Study(
        name=values["name"] or path.stem, path=path, algorithms=algorithms, systems=systems, seeds=seeds,
        steps=values["steps"], mode=values["mode"], jobs=values["jobs"], threads=values["threads"],
        config=values["config"], common_set=[*_preset_sets(values["preset"]), *values["set"]],
        eval_episodes=values["eval_episodes"],
        eval_seed=values["eval_seed"], controllers=controllers, progress_every_s=values["progress_every_s"],
        override_sets=_override_sets(doc, where))
    _add_runs(study, where)
    return study
