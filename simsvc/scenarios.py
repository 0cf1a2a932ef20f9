"""Scenarios: what an episode throws at the agents and what it rewards them for, as data (docs/scenarios.md).

A scenario is one TOML file, `configs/scenarios/NAME.toml` (or any file given by its path): the load draws at
reset (range, one factor for R and L or one each), the per-step load walk (size, bounds, whether evaluation
keeps it), an optional step change of the loads, what the DGs' measurements suffer (noise, delay in control
steps, sensors that fail for a whole episode), the loss of messages between neighbouring agents and the
reward's extra terms and weights. `env.scenario`
selects one; `classic`, the environment as it always was, is the default. Reading a file checks every key
and reports the first problem as one line naming the file and the key. This module needs NumPy-free stdlib
only, so the learner's bounds can read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import InputError
from common.tomlfile import named_toml, read_toml

SCENARIOS_DIR = Path(__file__).resolve().parent.parent / "configs" / "scenarios"
DEFAULT_SCENARIO = "classic"


@dataclass(frozen=True)
class Scenario:
    """One scenario, validated. Field defaults are those of `classic` (docs/scenarios.md#the-file)."""

    name: str = DEFAULT_SCENARIO
    description: str = ""
    # [loads]: every load's factor drawn from U(factor_range) at reset; R and L apart when independent_rl
    factor_range: tuple[float, float] = (0.8, 1.2)
    independent_rl: bool = False
    # [walk]: with the `walk` disturbance every factor takes a U(-step, step) step after each control step,
    # clipped to bounds; in_evaluation keeps it on when a policy or controller is evaluated
    walk_step: float = 0.05
    walk_bounds: tuple[float, float] = (0.5, 1.5)
    walk_in_evaluation: bool = False
    # [load_step]: from a control step drawn from U{window}, every factor changes by U(size) (clipped to the
    # walk bounds); steps = 0 (no [load_step] table) turns it off
    step_window: tuple[int, int] = (0, 0)
    step_size: tuple[float, float] = (0.0, 0.0)
    load_steps: bool = False
    # [measurement]: SI-relative Gaussian sensor noise, and the delay of a DG's own measurements
    noise_rel: float = 0.0
    delay_steps: int = 0
    # [reward]: weights of the extra terms (0 = off)
    sharing_weight: float = 0.0
    loadbus_weight: float = 0.0
    loadbus_nearest: int = 1
    # [sensor_fault]: this share of the DGs (rounded, drawn per episode) has no measurement all episode
    fault_share: float = 0.0
    # [links]: each directed link j -> i between neighbours loses its message at an acting step with this
    # probability, independently (simsvc/links.py)
    message_loss: float = 0.0

    def fault_count(self, n_dg: int) -> int:
        """How many of n_dg DGs lose their measurement in an episode: the share rounded half up, at least one
        when the share is above zero, at most n_dg."""
        if self.fault_share <= 0.0:
            return 0
        return min(n_dg, max(1, math.floor(self.fault_share * n_dg + 0.5)))

    @property
    def is_classic(self) -> bool:
        """True when every switch has the `classic` value: the environment behaves exactly as before
        scenarios existed (the name does not matter)."""
        return _switches(self) == _switches(Scenario())

    def evaluation_disturbance(self) -> str:
        """The disturbance mode evaluation runs under: `walk` when the scenario keeps the walk in evaluation,
        else `episode` (loads drawn at reset, then fixed but for a load step)."""
        return "walk" if self.walk_in_evaluation else "episode"


def _switches(sc: Scenario) -> tuple:
    return tuple(getattr(sc, f) for f in Scenario.__dataclass_fields__ if f not in ("name", "description"))


def available_scenarios() -> list[str]:
    """Names of the shipped scenarios (configs/scenarios/*.toml)."""
    return sorted(p.stem for p in SCENARIOS_DIR.glob("*.toml"))


def scenario_path(name_or_path: str | Path) -> Path:
    """A shipped scenario's file by name, or a user's file by path; an unknown name names the choices."""
    return named_toml(SCENARIOS_DIR, name_or_path, "scenario")


def load_scenario(name_or_path: str | Path | Scenario | None = None) -> Scenario:
    """The scenario of a name, a path or None (`classic`), validated; a Scenario passes through."""
    if isinstance(name_or_path, Scenario):
        return name_or_path
    path = scenario_path(DEFAULT_SCENARIO if name_or_path is None else name_or_path)
    return parse_scenario(read_toml(path, "scenario file"), path.name, path.stem)


_SECTIONS = {"loads": {"factor_range", "independent_rl"}, "walk": {"step", "bounds", "in_evaluation"},
             "load_step": {"window", "size"}, "measurement": {"noise_rel", "delay_steps"},
             "reward": {"sharing_weight", "loadbus_weight", "loadbus_nearest"}, "sensor_fault": {"share"},
             "links": {"loss"}}


class _Reader:
    def __init__(self, where: str):
        self.where = where

    def fail(self, key: str, why: str) -> InputError:
        return InputError(f"{self.where}: {key}: {why}")

    def number(self, table: dict, section: str, key: str, default: float, low: float = 0.0) -> float:
        value = table.get(key, default)
        name = f"{section}.{key}"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(name, f"expected a finite number, got {value!r}")
        if value < low:
            raise self.fail(name, f"must be >= {low}, got {value!r}")
        return float(value)

    def integer(self, table: dict, section: str, key: str, default: int, low: int = 0) -> int:
        value = table.get(key, default)
        name = f"{section}.{key}"
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, f"expected an integer, got {value!r}")
        if value < low:
            raise self.fail(name, f"must be >= {low}, got {value!r}")
        return int(value)

    def flag(self, table: dict, section: str, key: str, default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(f"{section}.{key}", f"expected true or false, got {value!r}")
        return value

    def pair(self, table: dict, section: str, key: str, default: tuple, kind: type = float,
             positive: bool = False) -> tuple:
        value = table.get(key, list(default))
        name = f"{section}.{key}"
        if (not isinstance(value, list) or len(value) != 2
                or any(isinstance(v, bool) or not isinstance(v, (int, float) if kind is float else int) for v in value)
                or any(not math.isfinite(v) for v in value)):
            what = "numbers" if kind is float else "integers"
            raise self.fail(name, f"expected two {what} [low, high], got {value!r}")
        low, high = (kind(v) for v in value)
        if low > high:
            raise self.fail(name, f"low {low} is above high {high}")
        if positive and low <= 0:
            raise self.fail(name, f"must be > 0, got {value!r}")
        return low, high


def parse_scenario(doc: dict[str, Any], where: str = "scenario", name: str = "scenario") -> Scenario:
    """Validate a scenario document (the parsed TOML); errors name `where` and the key."""
    rd = _Reader(where)
    for key, value in doc.items():
        if key == "description":
            if not isinstance(value, str):
                raise rd.fail(key, f"expected a string, got {value!r}")
        elif key not in _SECTIONS:
            raise rd.fail(key, f"unknown key (known: description, {', '.join(_SECTIONS)})")
        elif not isinstance(value, dict):
            raise rd.fail(key, "expected a table")
        else:
            for sub in value:
                if sub not in _SECTIONS[key]:
                    raise rd.fail(f"{key}.{sub}", f"unknown key (known: {', '.join(sorted(_SECTIONS[key]))})")
    loads, walk = doc.get("loads", {}), doc.get("walk", {})
    step, meas, reward = doc.get("load_step"), doc.get("measurement", {}), doc.get("reward", {})
    fault, links = doc.get("sensor_fault", {}), doc.get("links", {})
    d = Scenario()
    values: dict[str, Any] = {
        "name": name, "description": doc.get("description", ""),
        "factor_range": rd.pair(loads, "loads", "factor_range", d.factor_range, positive=True),
        "independent_rl": rd.flag(loads, "loads", "independent_rl", d.independent_rl),
        "walk_step": rd.number(walk, "walk", "step", d.walk_step),
        "walk_bounds": rd.pair(walk, "walk", "bounds", d.walk_bounds, positive=True),
        "walk_in_evaluation": rd.flag(walk, "walk", "in_evaluation", d.walk_in_evaluation),
        "noise_rel": rd.number(meas, "measurement", "noise_rel", d.noise_rel),
        "delay_steps": rd.integer(meas, "measurement", "delay_steps", d.delay_steps),
        "sharing_weight": rd.number(reward, "reward", "sharing_weight", d.sharing_weight),
        "loadbus_weight": rd.number(reward, "reward", "loadbus_weight", d.loadbus_weight),
        "loadbus_nearest": rd.integer(reward, "reward", "loadbus_nearest", d.loadbus_nearest, low=1),
        "fault_share": rd.number(fault, "sensor_fault", "share", d.fault_share),
        "message_loss": rd.number(links, "links", "loss", d.message_loss),
    }
    if values["message_loss"] >= 1.0:
        raise rd.fail("links.loss", f"must be < 1 (a probability; 1 would cut every link), got "
                      f"{values['message_loss']!r}")
    if values["fault_share"] > 1.0:
        raise rd.fail("sensor_fault.share", f"must be <= 1 (a share of the DGs), got {values['fault_share']!r}")
    lo, hi = values["walk_bounds"]
    if not (lo <= values["factor_range"][0] and values["factor_range"][1] <= hi):
        raise rd.fail("loads.factor_range", f"must lie within walk.bounds {list(values['walk_bounds'])}")
    if step is not None:
        for key in ("window", "size"):
            if key not in step:
                raise rd.fail(f"load_step.{key}", "missing")
        values["step_window"] = rd.pair(step, "load_step", "window", d.step_window, kind=int)
        if values["step_window"][0] < 1:
            raise rd.fail("load_step.window", "the first control step a load step can act from is 1")
        values["step_size"] = rd.pair(step, "load_step", "size", d.step_size)
        values["load_steps"] = True
    return Scenario(**values)
