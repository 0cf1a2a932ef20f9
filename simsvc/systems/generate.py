"""Regenerate the large feeder systems (oberrhein-*) from pandapower's MV Oberrhein network (docs/feeders.md).

    python -m simsvc.systems.generate             # rewrite every feeder system file
    python -m simsvc.systems.generate --check     # exit 1 if a committed file differs from its regeneration
    python -m simsvc.systems.generate --obs-stats # also recompute [obs_norm] (droop-only episodes)

Each file is a pure function of the source network, its FeederSpec and this script: the DG buses are drawn
with a fixed seed, everything else is deterministic. The observation statistics come from simulation
(`simsvc.obs_stats`); without --obs-stats the file's existing [obs_norm] table is carried over verbatim.

pandapower is needed here and in the tests only (the `test` extra); training never imports this module.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tomllib

from simsvc.systems import SYSTEMS_DIR

V_NOM_V = 480.0          # the microgrid's voltage base (as microgrid-6/-20)
FREQUENCY_HZ = 60.0      # the microgrid's frequency; the source's 50 Hz reactances keep their inductance
SOURCE_HZ = 50.0
P_PER_DG_W = 50e3        # nominal active load per DG after scaling (microgrid-20: ~1 MW of load on 20 DGs)
# The two inverter types (droop pairs) of microgrid-20; odd-numbered DGs get type1, even ones type2.
DG_TYPES = (("type1", 9.4e-5, 1.3e-3), ("type2", 12.5e-5, 1.5e-3))


@dataclass(frozen=True)
class FeederSpec:
    """One generated system: which feeders of the source network, how many DGs, the placement seed."""

    name: str
    substations: tuple[int, ...]   # pandapower bus index of each feeder's 20 kV substation busbar
    n_dg: int
    seed: int
    note: str


FEEDER_SYSTEMS = (
    FeederSpec("oberrhein-50", (39,), 50, 50, "the feeder of substation busbar 39 (69 buses)"),
    FeederSpec("oberrhein-95", (319,), 95, 95, "the feeder of substation busbar 319 (108 buses)"),
    FeederSpec("oberrhein-159", (39, 319), 159, 159,
               "both feeders, joined through their two 110/20 kV transformers at one shared node"),
)


def source_network():
    """pandapower's MV Oberrhein network in its default 'load' scenario: the data steps of
    `pandapower.networks.mv_oberrhein()` (loads at cos phi 0.98 and scaling 0.6), without the power flow it
    runs at the end (its results are not used here, and it costs a Numba compilation)."""
    import os
    import warnings

    import pandapower as pp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = pp.from_json(os.path.join(pp.pp_dir, "networks", "mv_oberrhein.json"))
    net.load.q_mvar = np.tan(np.arccos(0.98)) * net.load.p_mw
    net.load.scaling = 0.6
    net.sgen.scaling = 0.0
    return net


def _closed_lines(net) -> list[int]:
    """In-service lines whose line switches are all closed (the open ring points are left out)."""
    open_lines = set(net.switch.element[(net.switch.et == "l") & ~net.switch.closed].tolist())
    return [int(k) for k in net.line.index if net.line.in_service[k] and k not in open_lines]


def _component(start: int, adjacency: dict[int, list[int]]) -> list[int]:
    """Buses reached from start, in breadth-first order (neighbours by ascending index)."""
    seen = {start}
    order = [start]
    queue = deque([start])
    while queue:
        a = queue.popleft()
        for b in sorted(adjacency.get(a, [])):
            if b not in seen:
                seen.add(b)
                order.append(b)
                queue.append(b)
    return order


def build(spec: FeederSpec, net=None) -> dict:
    """The system's buses, DGs, lines, loads and agent graph (SI, at 480 V / 60 Hz) and its provenance."""
    net = source_network() if net is None else net
    adjacency: dict[int, list[int]] = {}
    lines = []
    for k in _closed_lines(net):
        f, t = int(net.line.from_bus[k]), int(net.line.to_bus[k])
        adjacency.setdefault(f, []).append(t)
        adjacency.setdefault(t, []).append(f)
        lines.append((k, f, t))
    buses: list[int] = []
    for sub in spec.substations:
        buses += _component(sub, adjacency)
    in_system = set(buses)
    v_src = float(net.bus.vn_kv[spec.substations[0]]) * 1e3
    loads = net.load[net.load.bus.isin(in_system) & net.load.in_service]
    p_src = float((loads.p_mw * loads.scaling).sum()) * 1e6
    z_scale = (V_NOM_V / v_src) ** 2 * p_src / (spec.n_dg * P_PER_DG_W)
    x_scale = z_scale * FREQUENCY_HZ / SOURCE_HZ

    branches = []   # (from, to, r_ohm, x_ohm) at 480 V / 60 Hz
    for k, f, t in lines:
        if f in in_system:
            row = net.line.loc[k]
            length = float(row.length_km) / float(row.parallel)
            branches.append((f"b{f}", f"b{t}", float(row.r_ohm_per_km) * length * z_scale,
                             float(row.x_ohm_per_km) * length * x_scale))
    bus_names = [f"b{b}" for b in buses]
    if len(spec.substations) > 1:
        # The transformers' short-circuit impedances (on their rating, at 20 kV) to one node for the 110 kV
        # side; equal phase shifts cancel, taps are ignored.
        bus_names.append("hv")
        for k in net.trafo.index[net.trafo.lv_bus.isin(spec.substations)]:
            tr = net.trafo.loc[k]
            z_base = float(tr.vn_lv_kv) ** 2 / float(tr.sn_mva)
            z = float(tr.vk_percent) / 100.0 * z_base
            r = float(tr.vkr_percent) / 100.0 * z_base
            branches.append((f"b{int(tr.lv_bus)}", "hv", r * z_scale, math.sqrt(z * z - r * r) * x_scale))

    load_rows = []
    for _, ld in loads.sort_values("bus", kind="stable").iterrows():
        p = float(ld.p_mw * ld.scaling) * 1e6
        q = float(ld.q_mvar * ld.scaling) * 1e6
        s2 = p * p + q * q
        load_rows.append((f"b{int(ld.bus)}", v_src**2 * p / s2 * z_scale, v_src**2 * q / s2 * x_scale))

    hosts = set(loads.bus.tolist()) | set(net.sgen.bus[net.sgen.bus.isin(in_system)].tolist())
    candidates = sorted(int(b) for b in hosts)
    if spec.n_dg > len(candidates):
        raise ValueError(f"{spec.name}: {spec.n_dg} DGs but only {len(candidates)} candidate buses")
    chosen = set(np.random.default_rng(spec.seed).choice(candidates, size=spec.n_dg, replace=False).tolist())
    dg_buses = [b for b in buses if b in chosen]          # DG 1 nearest a substation, then breadth-first
    dg_of = {b: i + 1 for i, b in enumerate(dg_buses)}

    edges = set()
    for b in dg_buses:   # neighbours: the DGs reached through buses without a DG
        seen = {b}
        queue = deque([b])
        while queue:
            a = queue.popleft()
            for c in sorted(adjacency.get(a, []) + _hv_neighbours(a, spec)):
                if c in seen or (c not in in_system and c != -1):
                    continue
                seen.add(c)
                if c in dg_of:
                    edges.add(tuple(sorted((dg_of[b], dg_of[c]))))
                else:
                    queue.append(c)
    return {"bus_names": bus_names, "dg_buses": [f"b{b}" for b in dg_buses], "branches": branches,
            "loads": load_rows, "edges": sorted(edges), "z_scale": z_scale, "p_src_w": p_src, "v_src_v": v_src,
            "n_candidates": len(candidates), "n_source_buses": len(buses)}


def _hv_neighbours(bus: int, spec: FeederSpec) -> list[int]:
    """For the agent graph of joined feeders: a substation busbar reaches the others through the shared
    transformer node (-1 stands for it)."""
    if len(spec.substations) < 2:
        return []
    if bus == -1:
        return list(spec.substations)
    return [-1] if bus in spec.substations else []


def _num(x: float) -> str:
    return f"{x:.6g}"


def render(spec: FeederSpec, data: dict, obs_norm: str) -> str:
    """The system file's text."""
    import pandapower

    out = [
        f"# {spec.name}: {spec.n_dg} droop DGs on a real MV feeder (docs/feeders.md). GENERATED by",
        "# `python -m simsvc.systems.generate`; edit the generator, not this file.",
        f"# Source: pandapower {pandapower.__version__} networks.mv_oberrhein() (scenario 'load'), {spec.note};",
        "#   line switches as given (open ring points stay open), line capacitance dropped.",
        f"# Scaling: {data['v_src_v'] / 1e3:g} kV -> {V_NOM_V:g} V at equal per-unit values, "
        "with the power base chosen",
        f"#   so the feeder's {data['p_src_w'] / 1e6:.4g} MW of load (p_mw x scaling) becomes {P_PER_DG_W / 1e3:g} kW "
        f"per DG: every",
        f"#   impedance x {_num(data['z_scale'])}; 50 Hz reactances keep their inductance (X x 60/50).",
        "#   Loads: constant R + jX drawing the source's P + jQ at nominal voltage.",
        f"# Placement: {spec.n_dg} of the {data['n_candidates']} buses hosting a load or static generator,",
        f"#   numpy.random.default_rng({spec.seed}).choice(sorted buses, {spec.n_dg}, replace=False); DGs numbered",
        "#   breadth-first from the substation, types alternate (odd: type1, even: type2, microgrid-20's pairs).",
        "# Agent graph: DGs joined when the feeder path between their buses passes no other DG.",
        "# Bus bN is pandapower bus N.",
        "",
        f'name = "{spec.name}"',
        f"frequency_hz = {FREQUENCY_HZ}",
        f"v_nom_v = {V_NOM_V}",
        'dg_model = "reduced"',
        "",
        "[integration]",
        "dt_reduced_s = 1e-3",
        "dt_full_s = 1e-4",
        "",
        "[control]",
        "control_dt_s = 0.05",
        "setpoint_min_v = 490.0",
        "setpoint_max_v = 540.0",
        "n_actions = 10",
        "",
        "[episode]",
        "warmup_s = 0.4",
        "steps = 20",
        "",
        "[secondary_frequency]   # microgrid-6's tuning: mild enough for the sparse flow (docs/pgsim.md)",
        "enabled = true",
        "gain = 40.0",
        "edge_weight = 6.0",
        "t_on_s = 0.4",
        "",
        "[secondary_voltage]",
        f"gain_per_s = {SECONDARY_VOLTAGE_GAIN}",
        "pinned = [1]",
        "",
        "[dg_defaults]",
        "omega_c_rad_s = 31.41",
        "r_c_ohm = 0.03",
        "l_c_h = 0.35e-3",
        "",
    ]
    for b in data["bus_names"]:
        out += ["[[bus]]", f'name = "{b}"']
    for i, b in enumerate(data["dg_buses"]):
        kind, m_p, n_q = DG_TYPES[i % 2]
        out += ["[[dg]]", f'bus = "{b}"', f"m_p = {m_p}", f"n_q = {n_q}", f'inner_loop = "{kind}"']
    for f, t, r, x in data["branches"]:
        out += ["[[line]]", f'from_bus = "{f}"', f'to_bus = "{t}"', f"r_ohm = {_num(r)}", f"x_ohm = {_num(x)}"]
    for b, r, x in data["loads"]:
        out += ["[[load]]", f'bus = "{b}"', f"r_ohm = {_num(r)}", f"x_ohm = {_num(x)}"]
    out += ["", "[agents]", "edges = [" + ", ".join(f"[{a}, {b}]" for a, b in data["edges"]) + "]", ""]
    if obs_norm:
        out += [obs_norm, ""]
    out += [
        "[inner_loop.type1]", "k_pv = 0.1", "k_iv = 420.0", "k_pc = 15.0", "k_ic = 20000.0",
        "[inner_loop.type2]", "k_pv = 0.05", "k_iv = 390.0", "k_pc = 10.5", "k_ic = 16000.0",
        "", "[filter]", "f = 0.75", "r_f_ohm = 0.1", "l_f_h = 1.35e-3", "c_f_f = 50e-6",
    ]
    return "\n".join(out) + "\n"


SECONDARY_VOLTAGE_GAIN = 25.0


def obs_norm_text(mean: np.ndarray, std: np.ndarray) -> str:
    """The [obs_norm] table as this generator writes it."""
    from simsvc.systems import OBS_NAMES

    fmt = lambda v: "[" + ", ".join(_num(float(x)) for x in v) + "]"  # noqa: E731
    return "\n".join([
        "# Observation normalisation from droop-only training episodes (python -m simsvc.obs_stats NAME).",
        f"# Channels: {', '.join(OBS_NAMES)}",
        "[obs_norm]", f"mean = {fmt(mean)}", f"std = {fmt(std)}"])


def existing_obs_norm(path: Path) -> str:
    """The [obs_norm] table of an existing generated file, re-rendered ('' when there is none)."""
    if not path.is_file():
        return ""
    table = tomllib.loads(path.read_text()).get("obs_norm")
    return obs_norm_text(np.asarray(table["mean"]), np.asarray(table["std"])) if table else ""


def generate(spec: FeederSpec, directory: Path = SYSTEMS_DIR, obs_stats: bool = False, net=None) -> str:
    """The text of spec's file; obs_stats recomputes [obs_norm] (else the file's own is kept)."""
    data = build(spec, net)
    path = directory / f"{spec.name}.toml"
    text = render(spec, data, existing_obs_norm(path))
    if obs_stats:
        from simsvc.obs_stats import droop_observation_stats

        path.write_text(render(spec, data, ""))
        mean, std = droop_observation_stats(str(path))
        text = render(spec, data, obs_norm_text(mean, std))
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simsvc.systems.generate", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    parser.add_argument("--obs-stats", action="store_true", help="recompute [obs_norm] by simulation")
    parser.add_argument("names", nargs="*", help="systems to generate (default: all)")
    args = parser.parse_args(argv)
    net = source_network()
    status = 0
    for spec in FEEDER_SYSTEMS:
        if args.names and spec.name not in args.names:
            continue
        path = SYSTEMS_DIR / f"{spec.name}.toml"
        text = generate(spec, obs_stats=args.obs_stats, net=net)
        if args.check:
            same = path.is_file() and path.read_text() == text
            print(f"{spec.name}: {'identical' if same else 'DIFFERS'}")
            status |= 0 if same else 1
        else:
            path.write_text(text)
            print(f"wrote {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
