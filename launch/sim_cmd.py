"""`powernet sim`: one episode (or a free run) of a system under a conventional controller, saved and plotted."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from common.errors import InputError
from launch.errors import exit_on_user_error
from simsvc.controllers import CONTROLLERS
from simsvc.systems import available_systems, load_system


@click.command()
@click.option("--system", "system_name", default="microgrid-6", show_default=True,
              help=f"A shipped system ({', '.join(available_systems())}) or the path of a system TOML file.")
@click.option("--controller", type=click.Choice(CONTROLLERS), default="secondary", show_default=True,
              help="droop: V_n = V_nom (primary control only); secondary: distributed cooperative voltage "
                   "control (Bidram et al.); random: uniformly random discrete set-points; constant, per-dg: "
                   "set-points fitted on training seeds (powernet fit-baselines); local: each DG undoes its own "
                   "Q droop from its own measured Q, snapped to the action grid (local-continuous: not snapped); "
                   "oracle: centralised one-step look-ahead on the true state (an upper reference).")
@click.option("--seed", type=int, default=2000, show_default=True, help="Episode seed (load draws, random controller).")
@click.option("--disturbance", type=click.Choice(["none", "episode", "walk"]), default="episode", show_default=True,
              help="none: nominal loads; episode: per-episode load factors U(0.8, 1.2), fixed within the episode "
                   "(evaluation); walk: plus a U(±0.05) random walk every control step (training).")
@click.option("--scenario", default="classic", show_default=True,
              help="configs/scenarios/NAME.toml or a scenario file: load draws, walk, load steps, measurement noise "
                   "and delay, reward terms (docs/scenarios.md); --disturbance still says which disturbances run")
@click.option("--duration", "duration_s", type=float, default=None,
              help="Run this many seconds from rest with nominal loads instead of one MDP episode (needed for "
                   "systems without an episode definition, such as bidram-4).")
@click.option("--dg-model", type=click.Choice(["reduced", "full"]), default=None,
              help="Override the system's DG model.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Output folder: trace.npz, trace.png and summary.json.")
@exit_on_user_error
def sim(system_name: str, controller: str, seed: int, disturbance: str, scenario: str, duration_s: float | None,
        dg_model: str | None, out_dir: str) -> None:
    """Run one episode (warm-up included) and write DIR/trace.npz and DIR/trace.png.

    trace.npz holds t (s, from 0) and v_pu, p_w, q_var, f_hz, vn_v, each [time, DG], sampled every 10 ms
    (and so at every control step); summary.json the episode's metrics.
    """
    # Numba (the simulator) and matplotlib load here, not at import: `powernet sim --help` stays quick.
    from launch.plots import plot_trace
    from simsvc.episodes import run_episode, run_for
    from simsvc.scenarios import load_scenario

    system = load_system(system_name)
    sc = load_scenario(scenario)
    if duration_s is not None:
        if duration_s <= 0:
            raise InputError(f"--duration must be > 0 seconds, got {duration_s}")
        run = run_for(system, controller, duration_s, seed=seed, dg_model=dg_model)
    elif not system.has_episode:
        raise InputError(f"system '{system.name}' has no episode definition; give --duration SECONDS")
    else:
        run = run_episode(system, controller, seed, disturbance, dg_model=dg_model, scenario=sc)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "trace.npz", **run.trace)
    title = f"{system.name} · {controller} · seed {seed}"
    plot_trace(run.trace, out / "trace.png", title=title)
    summary = {"system": system.name, "controller": controller, "seed": seed, "disturbance": disturbance,
               **({"scenario": sc.name} if sc.name != "classic" else {}),
               "duration_s": float(run.trace["t"][-1]), **run.summary}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    v_final = run.trace["v_pu"][-1]
    click.echo(f"{title}: final DG voltages {np.array2string(v_final, precision=3)} p.u.")
    for key in ("return", "violation_rate", "settling_step", "max_dev_pu"):
        if key in run.summary:
            click.echo(f"  {key:15s} {run.summary[key]:.4g}")
    click.echo(f"wrote {out / 'trace.npz'}, {out / 'trace.png'}, {out / 'summary.json'}")
