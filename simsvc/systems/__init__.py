"""Microgrid systems as data: TOML files of buses, DGs, lines, loads and the agent graph.

`load_system(name_or_path)` reads `simsvc/systems/<name>.toml` (or any path a user gives), checks every
entry, and returns a `System` of plain arrays in SI units. A malformed file raises `InputError` naming
the file and the bad entry, e.g. `microgrid-6.toml: line[3].to_bus: unknown bus 'b99'`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import InputError
from common.tomlfile import named_toml, read_toml

SYSTEMS_DIR = Path(__file__).resolve().parent
DG_MODELS = ("reduced", "full")
# What each agent observes of its DG, in this order (SI units; normalised by the system's [obs_norm] table).
OBS_NAMES = ("delta_rad", "p_w", "q_var", "i_od_a", "i_oq_a", "i_oD_a", "i_oQ_a", "v_bD_v", "v_bQ_v")

# Column order of System.dg_params: one row per DG, SI units.
DG_COLUMNS = ("m_p", "n_q", "omega_c", "r_c", "l_c", "k_pv", "k_iv", "k_pc", "k_ic", "f", "r_f", "l_f", "c_f")
DG_COL = {name: k for k, name in enumerate(DG_COLUMNS)}


@dataclass(frozen=True)
class System:
    """One microgrid, ready for the simulator. Arrays are float64 (SI) or int64 (0-based indices)."""

    name: str
    path: Path
    frequency_hz: float
    v_nom_v: float
    dg_model: str
    start: str
    dt_reduced_s: float
    dt_full_s: float
    control_dt_s: float
    setpoint_min_v: float
    setpoint_max_v: float
    n_actions: int
    warmup_s: float | None
    episode_steps: int | None
    bus_names: tuple[str, ...]
    dg_bus: np.ndarray
    dg_params: np.ndarray
    line_from: np.ndarray
    line_to: np.ndarray
    line_r_ohm: np.ndarray
    line_l_h: np.ndarray
    load_bus: np.ndarray
    load_r_ohm: np.ndarray
    load_l_h: np.ndarray
    agent_adjacency: np.ndarray
    sec_f_enabled: bool
    sec_f_gain: float
    sec_f_edge_weight: float
    sec_f_t_on_s: float
    sec_v_gain_per_s: float
    sec_v_pinned: np.ndarray
    obs_mean: np.ndarray = field(default_factory=lambda: np.zeros(len(OBS_NAMES)))
    obs_std: np.ndarray = field(default_factory=lambda: np.ones(len(OBS_NAMES)))

    @property
    def omega_nom(self) -> float:
        """Nominal angular frequency (rad/s)."""
        return 2.0 * math.pi * self.frequency_hz

    @property
    def n_dg(self) -> int:
        return int(self.dg_bus.shape[0])

    @property
    def n_bus(self) -> int:
        return len(self.bus_names)

    @property
    def n_line(self) -> int:
        return int(self.line_from.shape[0])

    @property
    def n_load(self) -> int:
        return int(self.load_bus.shape[0])

    @property
    def has_episode(self) -> bool:
        return self.episode_steps is not None

    def dt_s(self, dg_model: str) -> float:
        """Fixed integration step (s) of the given DG model."""
        return self.dt_full_s if dg_model == "full" else self.dt_reduced_s


def available_systems() -> list[str]:
    """Names of the systems shipped with PowerNet."""
    return sorted(p.stem for p in SYSTEMS_DIR.glob("*.toml"))


def resolve_system_path(name_or_path: str | Path) -> Path:
    """A shipped system's name, or a path to a user's own TOML file."""
    return named_toml(SYSTEMS_DIR, name_or_path, "system")


class _Reader:
    """Reads typed values out of nested TOML tables, raising InputError that names file and key."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, why: str) -> InputError:
        return InputError(f"{self.path.name}: {where}: {why}")

    def number(self, table: dict, key: str, where: str, *, positive: bool = False, default: Any = None) -> float:
        if key not in table:
            if default is not None:
                return float(default)
            raise self.fail(f"{where}.{key}" if where else key, "missing")
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(f"{where}.{key}" if where else key, f"expected a finite number, got {value!r}")
        if positive and value <= 0:
            raise self.fail(f"{where}.{key}" if where else key, f"must be > 0, got {value!r}")
        return float(value)

    def string(self, table: dict, key: str, where: str, choices: tuple[str, ...] | None = None,
               default: str | None = None) -> str:
        value = table.get(key, default)
        name = f"{where}.{key}" if where else key
        if value is None:
            raise self.fail(name, "missing")
        if not isinstance(value, str):
            raise self.fail(name, f"expected a string, got {value!r}")
        if choices is not None and value not in choices:
            raise self.fail(name, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def table(self, doc: dict, key: str, required: bool = True) -> dict:
        value = doc.get(key)
        if value is None:
            if required:
                raise self.fail(key, "missing section")
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, "expected a table")
        return value

    def rows(self, doc: dict, key: str) -> list[dict]:
        value = doc.get(key)
        if not isinstance(value, list) or not value or not all(isinstance(r, dict) for r in value):
            raise self.fail(key, f"expected one or more [[{key}]] entries")
        return value

    def check_keys(self, table: dict, allowed: set[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(f"{where}.{key}" if where else key, "unknown key")


_TOP_LEVEL_KEYS = {"name", "frequency_hz", "v_nom_v", "dg_model", "start", "integration", "control", "episode",
                   "secondary_frequency", "secondary_voltage", "dg_defaults", "bus", "dg", "line", "load", "agents",
                   "inner_loop", "filter", "obs_norm"}
BusLookup = Callable[[dict, str, str], int]


def load_system(name_or_path: str | Path) -> System:
    """Load and validate a system file; see the module docstring."""
    path = resolve_system_path(name_or_path)
    rd = _Reader(path)
    doc = read_toml(path, "system file")
    rd.check_keys(doc, _TOP_LEVEL_KEYS, "")
    name = rd.string(doc, "name", "")
    freq = rd.number(doc, "frequency_hz", "", positive=True)
    v_nom = rd.number(doc, "v_nom_v", "", positive=True)
    dg_model = rd.string(doc, "dg_model", "", DG_MODELS)
    start = rd.string(doc, "start", "", ("rest",), default="rest")
    omega_nom = 2.0 * math.pi * freq

    steps_and_setpoints = _read_steps_and_setpoints(rd, doc)
    episode = _read_episode(rd, doc)
    bus_names = _read_buses(rd, doc)
    bus_of = _bus_lookup(rd, bus_names)
    dg_bus, dg_params = _read_dgs(rd, doc, bus_of)
    line_buses, line_r, line_l = _read_branches(rd, doc, "line", ("from_bus", "to_bus"), bus_of, omega_nom)
    load_buses, load_r, load_l = _read_branches(rd, doc, "load", ("bus",), bus_of, omega_nom)
    adjacency = _read_agent_graph(rd, doc, len(dg_bus))
    tuning = _read_controller_tuning(rd, doc, len(dg_bus))
    obs_mean, obs_std = _read_observation_stats(rd, doc)

    system = System(
        name=name, path=path, frequency_hz=freq, v_nom_v=v_nom, dg_model=dg_model, start=start,
        **steps_and_setpoints, **episode, bus_names=bus_names, dg_bus=dg_bus, dg_params=dg_params,
        line_from=line_buses[0], line_to=line_buses[1], line_r_ohm=line_r, line_l_h=line_l,
        load_bus=load_buses[0], load_r_ohm=load_r, load_l_h=load_l,
        agent_adjacency=adjacency, **tuning, obs_mean=obs_mean, obs_std=obs_std,
    )
    _check_connected(system, rd)
    return system


def _int_at_least(rd: _Reader, value: Any, where: str, minimum: int, expected: str) -> int:
    """value if it is an integer (not a bool) >= minimum, else an InputError at where."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise rd.fail(where, f"expected {expected}, got {value!r}")
    return value


def _read_steps_and_setpoints(rd: _Reader, doc: dict) -> dict[str, Any]:
    """[integration] step sizes and [control]: control step, set-point range and number of actions."""
    integ = rd.table(doc, "integration")
    rd.check_keys(integ, {"dt_reduced_s", "dt_full_s"}, "integration")
    control = rd.table(doc, "control")
    rd.check_keys(control, {"control_dt_s", "setpoint_min_v", "setpoint_max_v", "n_actions"}, "control")
    n_actions = _int_at_least(rd, control.get("n_actions", 10), "control.n_actions", 2, "an integer >= 2")
    sp_min = rd.number(control, "setpoint_min_v", "control", positive=True)
    sp_max = rd.number(control, "setpoint_max_v", "control", positive=True)
    if sp_max <= sp_min:
        raise rd.fail("control.setpoint_max_v", "must exceed setpoint_min_v")
    return {"dt_reduced_s": rd.number(integ, "dt_reduced_s", "integration", positive=True),
            "dt_full_s": rd.number(integ, "dt_full_s", "integration", positive=True),
            "control_dt_s": rd.number(control, "control_dt_s", "control", positive=True),
            "setpoint_min_v": sp_min, "setpoint_max_v": sp_max, "n_actions": n_actions}


def _read_episode(rd: _Reader, doc: dict) -> dict[str, Any]:
    """The optional [episode]: warm-up seconds and control steps (both None for a system without one)."""
    episode = rd.table(doc, "episode", required=False)
    rd.check_keys(episode, {"warmup_s", "steps"}, "episode")
    if not episode:
        return {"warmup_s": None, "episode_steps": None}
    warmup_s = rd.number(episode, "warmup_s", "episode")
    steps = _int_at_least(rd, episode.get("steps"), "episode.steps", 1, "a positive integer")
    return {"warmup_s": warmup_s, "episode_steps": steps}


def _read_buses(rd: _Reader, doc: dict) -> tuple[str, ...]:
    """Bus names from [[bus]], in file order, each once."""
    bus_names: list[str] = []
    for k, row in enumerate(rd.rows(doc, "bus")):
        rd.check_keys(row, {"name", "ieee34_node"}, f"bus[{k}]")
        bname = rd.string(row, "name", f"bus[{k}]")
        if bname in bus_names:
            raise rd.fail(f"bus[{k}].name", f"duplicate bus '{bname}'")
        bus_names.append(bname)
    return tuple(bus_names)


def _bus_lookup(rd: _Reader, bus_names: tuple[str, ...]) -> BusLookup:
    """bus_of(row, key, where): the index of the bus a row names under key, or an InputError at where.key."""
    bus_index = {b: k for k, b in enumerate(bus_names)}

    def bus_of(row: dict, key: str, where: str) -> int:
        bname = rd.string(row, key, where)
        if bname not in bus_index:
            raise rd.fail(f"{where}.{key}", f"unknown bus '{bname}'")
        return bus_index[bname]

    return bus_of


def _read_dgs(rd: _Reader, doc: dict, bus_of: BusLookup) -> tuple[np.ndarray, np.ndarray]:
    """(dg_bus, dg_params) from [[dg]] rows, filled in from [dg_defaults], [inner_loop.<kind>] and [filter]."""
    defaults = rd.table(doc, "dg_defaults")
    rd.check_keys(defaults, {"omega_c_rad_s", "r_c_ohm", "l_c_h"}, "dg_defaults")
    inner = rd.table(doc, "inner_loop")
    filt = rd.table(doc, "filter")
    rd.check_keys(filt, {"f", "r_f_ohm", "l_f_h", "c_f_f"}, "filter")
    dg_rows = rd.rows(doc, "dg")
    dg_params = np.zeros((len(dg_rows), len(DG_COLUMNS)))
    dg_bus = np.zeros(len(dg_rows), dtype=np.int64)
    for k, row in enumerate(dg_rows):
        where = f"dg[{k}]"
        rd.check_keys(row, {"bus", "m_p", "n_q", "inner_loop", "omega_c_rad_s", "r_c_ohm", "l_c_h"}, where)
        dg_bus[k] = bus_of(row, "bus", where)
        kind = rd.string(row, "inner_loop", where, tuple(inner))
        gains = inner[kind]
        if not isinstance(gains, dict):
            raise rd.fail(f"inner_loop.{kind}", "expected a table")
        rd.check_keys(gains, {"k_pv", "k_iv", "k_pc", "k_ic"}, f"inner_loop.{kind}")
        values = {
            "m_p": rd.number(row, "m_p", where, positive=True),
            "n_q": rd.number(row, "n_q", where, positive=True),
            "omega_c": rd.number(row, "omega_c_rad_s", where, positive=True,
                                 default=rd.number(defaults, "omega_c_rad_s", "dg_defaults", positive=True)),
            "r_c": rd.number(row, "r_c_ohm", where, positive=True,
                             default=rd.number(defaults, "r_c_ohm", "dg_defaults", positive=True)),
            "l_c": rd.number(row, "l_c_h", where, positive=True,
                             default=rd.number(defaults, "l_c_h", "dg_defaults", positive=True)),
            "f": rd.number(filt, "f", "filter"),
            "r_f": rd.number(filt, "r_f_ohm", "filter", positive=True),
            "l_f": rd.number(filt, "l_f_h", "filter", positive=True),
            "c_f": rd.number(filt, "c_f_f", "filter", positive=True),
        }
        for gain in ("k_pv", "k_iv", "k_pc", "k_ic"):
            values[gain] = rd.number(gains, gain, f"inner_loop.{kind}", positive=True)
        dg_params[k] = [values[c] for c in DG_COLUMNS]
    return dg_bus, dg_params


def _read_branches(rd: _Reader, doc: dict, key: str, ends: tuple[str, ...], bus_of: BusLookup,
                   omega_nom: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bus indices [len(ends), rows], R in Ω, L in H) of the [[line]] or [[load]] rows; X becomes L at ω_nom."""
    rows = rd.rows(doc, key)
    buses = np.zeros((len(ends), len(rows)), dtype=np.int64)
    r = np.zeros(len(rows))
    ell = np.zeros(len(rows))
    for k, row in enumerate(rows):
        where = f"{key}[{k}]"
        rd.check_keys(row, set(ends) | {"r_ohm", "x_ohm"}, where)
        buses[:, k] = [bus_of(row, e, where) for e in ends]
        r[k] = rd.number(row, "r_ohm", where, positive=True)
        ell[k] = rd.number(row, "x_ohm", where, positive=True) / omega_nom
        if len(ends) == 2 and buses[0, k] == buses[1, k]:
            raise rd.fail(where, "a line must join two different buses")
    return buses, r, ell


def _read_agent_graph(rd: _Reader, doc: dict, n_dg: int) -> np.ndarray:
    """Symmetric boolean adjacency of the agents from [agents] edges (1-based DG pairs)."""
    agents = rd.table(doc, "agents")
    rd.check_keys(agents, {"edges"}, "agents")
    adjacency = np.zeros((n_dg, n_dg), dtype=bool)
    edges = agents.get("edges")
    if not isinstance(edges, list):
        raise rd.fail("agents.edges", "expected a list of [i, j] DG pairs (1-based)")
    for k, edge in enumerate(edges):
        ok = (isinstance(edge, list) and len(edge) == 2 and all(isinstance(e, int) for e in edge)
              and all(1 <= e <= n_dg for e in edge) and edge[0] != edge[1])
        if not ok:
            raise rd.fail(f"agents.edges[{k}]", f"expected two different DG numbers in 1..{n_dg}, got {edge!r}")
        adjacency[edge[0] - 1, edge[1] - 1] = adjacency[edge[1] - 1, edge[0] - 1] = True
    return adjacency


def _read_controller_tuning(rd: _Reader, doc: dict, n_dg: int) -> dict[str, Any]:
    """The System fields of [secondary_frequency] and [secondary_voltage] (pinned DGs 0-based)."""
    sec_f = rd.table(doc, "secondary_frequency")
    rd.check_keys(sec_f, {"enabled", "gain", "edge_weight", "t_on_s"}, "secondary_frequency")
    if not isinstance(sec_f.get("enabled"), bool):
        raise rd.fail("secondary_frequency.enabled", "expected true or false")
    sec_v = rd.table(doc, "secondary_voltage")
    rd.check_keys(sec_v, {"gain_per_s", "pinned"}, "secondary_voltage")
    pinned = sec_v.get("pinned", [1])
    if not isinstance(pinned, list) or not all(isinstance(p, int) and 1 <= p <= n_dg for p in pinned):
        raise rd.fail("secondary_voltage.pinned", f"expected a list of DG numbers in 1..{n_dg}")
    return {"sec_f_enabled": sec_f["enabled"],
            "sec_f_gain": rd.number(sec_f, "gain", "secondary_frequency"),
            "sec_f_edge_weight": rd.number(sec_f, "edge_weight", "secondary_frequency"),
            "sec_f_t_on_s": rd.number(sec_f, "t_on_s", "secondary_frequency"),
            "sec_v_gain_per_s": rd.number(sec_v, "gain_per_s", "secondary_voltage", positive=True),
            "sec_v_pinned": np.array([p - 1 for p in pinned], dtype=np.int64)}


def _read_observation_stats(rd: _Reader, doc: dict) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of the 9 observations from the optional [obs_norm]; zeros and ones without it."""
    obs_norm = rd.table(doc, "obs_norm", required=False)
    rd.check_keys(obs_norm, {"mean", "std"}, "obs_norm")
    if not obs_norm:
        return np.zeros(9), np.ones(9)
    for key in ("mean", "std"):
        vec = obs_norm.get(key)
        if (not isinstance(vec, list) or len(vec) != 9
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in vec)):
            raise rd.fail(f"obs_norm.{key}", "expected 9 finite numbers")
    obs_mean = np.asarray(obs_norm["mean"], dtype=np.float64)
    obs_std = np.asarray(obs_norm["std"], dtype=np.float64)
    if np.any(obs_std <= 0):
        raise rd.fail("obs_norm.std", "every entry must be > 0")
    return obs_mean, obs_std


def _check_connected(system: System, rd: _Reader) -> None:
    """Every bus must reach a DG through lines, or its voltage is undetermined."""
    parent = list(range(system.n_bus))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in zip(system.line_from, system.line_to, strict=True):
        parent[find(int(a))] = find(int(b))
    powered = {find(int(b)) for b in system.dg_bus}
    for k, bname in enumerate(system.bus_names):
        if find(k) not in powered:
            raise rd.fail(f"bus '{bname}'", "is not connected to any DG through lines")


def setpoint_choices(system: System) -> np.ndarray:
    """The agents' discrete set-points (V), action a -> setpoint_min + a (max - min) / n_actions."""
    step_v = (system.setpoint_max_v - system.setpoint_min_v) / system.n_actions
    return system.setpoint_min_v + step_v * np.arange(system.n_actions)


def nearest_action(system: System, vn_v: np.ndarray) -> np.ndarray:
    """The discrete action whose set-point is nearest to each of `vn_v` (V)."""
    step_v = (system.setpoint_max_v - system.setpoint_min_v) / system.n_actions
    return np.clip(np.rint((np.asarray(vn_v) - system.setpoint_min_v) / step_v), 0, system.n_actions - 1).astype(
        np.int64)
