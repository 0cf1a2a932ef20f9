"""`powernet bench sim`: how fast PGSim runs, next to the original way of integrating it, and how accurately.

What is counted
---------------
* `steps_per_s`: agent decision steps per wall second of `VecMicrogridEnv` ('walk' disturbance, random
  discrete actions), i.e. env.step calls × E. Each episode's 0.4 s warm-up (run at auto-reset) is inside
  the timed wall time but not counted as steps; `sim_s_per_wall_s` counts every simulated second,
  warm-up included.
* `odeint_steps_per_s`, `numpy_steps_per_s`, `ours_schedule_steps_per_s`: one seeded episode schedule
  (warm-up + control steps, see `simsvc.reference.episode_schedule`) through, respectively, scipy's odeint
  on the original r_N equations at the original tolerances with a Numba right-hand side, the NumPy twin of
  our integrator, and our Numba integrator; control steps of the schedule per wall second, warm-up time
  included, so the three compare like for like.
* `max_err_pu` / `odeint_max_err_pu`: the largest DG voltage difference (p.u.) over every interval end of
  that schedule between our integrator / odeint and a tight Radau solve of the r_N equations.
Everything is compiled and warmed up before it is timed, and BLAS runs on one thread (odeint's linear
algebra goes through OpenBLAS; with two threads on a busy two-core machine it ran up to 15x slower).

A reference solve that fails (LSODA can give up with "Excess work done" on some machines) does not end the
benchmark: its figures are null in the JSON, "failed" in the table, and `failures` holds, per solver, the
error text; every other figure is still measured and written.

The references need scipy (the `test` extra); without it the command says so in one line and exits 2.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

from common.errors import InputError
from launch.errors import exit_on_user_error
from simsvc.systems import System, load_system

if TYPE_CHECKING:
    from types import ModuleType

DEFAULT_SYSTEMS = ("microgrid-6", "microgrid-20")


_BLAS_THREAD_CALLS = (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
                      ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
                      ("openblas_set_num_threads", "openblas_get_num_threads"))


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[int]:
    """Run the block with every loaded OpenBLAS on one thread (yields how many libraries were set).

    Best effort, Linux only: it finds the OpenBLAS copies numpy and scipy loaded through /proc/self/maps
    and restores their thread counts afterwards; elsewhere it changes nothing.
    """
    restore = []
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({ln.split()[-1] for ln in maps if "openblas" in ln.lower() and ".so" in ln.split()[-1]})
    except OSError:
        paths = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _BLAS_THREAD_CALLS:
            setter, getter = getattr(lib, set_name, None), getattr(lib, get_name, None)
            if setter is not None and getter is not None:
                restore.append((setter, int(getter())))
                setter(ctypes.c_int(1))
                break
    try:
        yield len(restore)
    finally:
        for setter, n in restore:
            setter(ctypes.c_int(n))


def _say(text: str) -> None:
    click.echo(text, err=True)


def reference_module() -> ModuleType:
    """simsvc.reference, or an InputError naming the missing extra (scipy is a test dependency only)."""
    try:
        from simsvc import reference
    except ImportError as exc:
        if (exc.name or "").split(".")[0] != "scipy":
            raise
        raise InputError("powernet bench sim needs scipy for its reference solvers: install the test extra "
                         "(pip install -e '.[test]' in the repository)") from None
    return reference


def time_env(system: System, n_envs: int, episodes: int, seed: int) -> dict[str, float]:
    """Decision steps and simulated seconds per wall second of the vectorised env over `episodes` episodes."""
    from simsvc.env import VecMicrogridEnv

    env = VecMicrogridEnv(system, n_envs, disturbance="walk")
    rng = np.random.default_rng(seed)
    env.reset(seed)
    n_steps = episodes * env.episode_steps
    actions = rng.integers(0, env.n_actions, size=(n_steps, n_envs, env.n_agents))
    t0 = time.perf_counter()
    for k in range(n_steps):
        env.step(actions[k])
    wall_s = time.perf_counter() - t0
    sim_s = n_envs * episodes * (system.warmup_s + env.episode_steps * env.control_dt_s)
    return {"steps_per_s": n_envs * n_steps / wall_s, "sim_s_per_wall_s": sim_s / wall_s, "wall_s": wall_s}


def _timed(func: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = func(*args, **kwargs)
    return out, time.perf_counter() - t0


def _solve_or_record(failures: dict[str, str], solver: str, name: str, func: Any,
                     *args: Any, **kwargs: Any) -> tuple[Any, float | None]:
    """(result, wall s) of a reference solve, or (None, None) with its error text in failures[solver].

    Only RuntimeError, the way simsvc.reference reports a solver that gave up, is recorded; anything
    else is a bug and propagates.
    """
    try:
        return _timed(func, *args, **kwargs)
    except RuntimeError as exc:
        failures[solver] = str(exc)
        _say(f"[{name}] {solver} failed, its figures are left out: {exc}")
        return None, None


def warm_up(system: System, failures: dict[str, str]) -> None:
    """Compile (or load from cache) every kernel the benchmark times, on a one-step schedule.

    A failing odeint here is recorded as failures['odeint_warmup']: its kernels are compiled by then.
    """
    reference = reference_module()
    short = reference.episode_schedule(system, 0, n_steps=1)
    reference.solve_ours(system, system.dg_model, short)
    _solve_or_record(failures, "odeint_warmup", system.name, reference.solve_reference, system, system.dg_model,
                     short, method="odeint")
    reference.compile_kernels(system, system.dg_model)
    time_env(system, 1, 1, 0)


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else num / den


def _max_gap(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    return None if a is None or b is None else float(np.abs(a - b).max())


def bench_system(system: System, episodes: int, n_envs: int, n_steps: int | None, seed: int) -> dict[str, Any]:
    """All figures of one system (see the module docstring); null where a reference solve failed."""
    reference = reference_module()
    name = system.name
    dg_model = system.dg_model
    failures: dict[str, str] = {}
    _say(f"[{name}] compiling and warming up")
    warm_up(system, failures)
    schedule = reference.episode_schedule(system, seed, n_steps=n_steps)
    n_ctrl = schedule.n_intervals - int(round(system.warmup_s / system.control_dt_s))

    _say(f"[{name}] tight Radau reference of the r_N equations ({schedule.n_intervals} intervals)")
    v_radau, radau_s = _solve_or_record(failures, "radau", name, reference.solve_reference, system, dg_model,
                                        schedule, method="radau")
    _say(f"[{name}] odeint at rtol {reference.ODEINT_RTOL:g}, atol {reference.ODEINT_ATOL:g}")
    v_odeint, odeint_s = _solve_or_record(failures, "odeint", name, reference.solve_reference, system, dg_model,
                                          schedule, method="odeint")
    _say(f"[{name}] our integrator and its NumPy twin on the same schedule")
    v_ours, ours_s = _timed(reference.solve_ours, system, dg_model, schedule)
    v_numpy, numpy_s = _timed(reference.solve_numpy, system, dg_model, schedule)

    _say(f"[{name}] env, E = 1, {episodes} episode(s)")
    one = time_env(system, 1, episodes, seed)
    _say(f"[{name}] env, E = {n_envs}, {episodes} episode(s)")
    vec = time_env(system, n_envs, episodes, seed)
    odeint_steps_per_s = _ratio(n_ctrl, odeint_s)
    return {
        "dg_model": dg_model,
        "dt_s": system.dt_s(dg_model),
        "steps_per_s": one["steps_per_s"],
        "sim_s_per_wall_s": one["sim_s_per_wall_s"],
        "n_envs_vec": n_envs,
        "steps_per_s_vec": vec["steps_per_s"],
        "sim_s_per_wall_s_vec": vec["sim_s_per_wall_s"],
        "ours_schedule_steps_per_s": n_ctrl / ours_s,
        "odeint_steps_per_s": odeint_steps_per_s,
        "numpy_steps_per_s": n_ctrl / numpy_s,
        "speedup_vs_odeint": _ratio(one["steps_per_s"], odeint_steps_per_s),
        "speedup_vs_odeint_vec": _ratio(vec["steps_per_s"], odeint_steps_per_s),
        "max_err_pu": _max_gap(v_ours, v_radau),
        "odeint_max_err_pu": _max_gap(v_odeint, v_radau),
        "numpy_vs_numba_max_diff_pu": float(np.abs(v_numpy[:, 0] - v_ours).max()),
        "radau_wall_s": radau_s,
        "episodes": episodes,
        "schedule_control_steps": n_ctrl,
        "failures": failures,
    }


def machine_info() -> dict[str, Any]:
    """Where the figures were measured."""
    import numba
    import scipy

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy.__version__, "numba": numba.__version__,
            "numba_threads": numba.config.NUMBA_NUM_THREADS,
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """A readable table of the per-system results ("failed" where a reference solve gave no figure)."""
    rows = [("", *results)]
    spec = [  # label, the figures the cell shows, how
        ("model, dt", ("dg_model", "dt_s"), lambda r: f"{r['dg_model']}, {r['dt_s'] * 1e3:g} ms"),
        ("env steps/s, E=1", ("steps_per_s",), lambda r: f"{r['steps_per_s']:,.0f}"),
        ("env steps/s, E=N", ("steps_per_s_vec",), lambda r: f"{r['steps_per_s_vec']:,.0f} (N={r['n_envs_vec']})"),
        ("sim s / wall s, E=1", ("sim_s_per_wall_s",), lambda r: f"{r['sim_s_per_wall_s']:,.1f}"),
        ("sim s / wall s, E=N", ("sim_s_per_wall_s_vec",), lambda r: f"{r['sim_s_per_wall_s_vec']:,.1f}"),
        ("integrator steps/s", ("ours_schedule_steps_per_s",), lambda r: f"{r['ours_schedule_steps_per_s']:,.0f}"),
        ("odeint steps/s", ("odeint_steps_per_s",), lambda r: f"{r['odeint_steps_per_s']:,.1f}"),
        ("NumPy twin steps/s", ("numpy_steps_per_s",), lambda r: f"{r['numpy_steps_per_s']:,.1f}"),
        ("speed-up vs odeint", ("speedup_vs_odeint", "speedup_vs_odeint_vec"),
         lambda r: f"{r['speedup_vs_odeint']:,.0f}x / {r['speedup_vs_odeint_vec']:,.0f}x"),
        ("max |dv| ours (p.u.)", ("max_err_pu",), lambda r: f"{r['max_err_pu']:.2e}"),
        ("max |dv| odeint (p.u.)", ("odeint_max_err_pu",), lambda r: f"{r['odeint_max_err_pu']:.2e}"),
    ]
    rows += [(label, *("failed" if any(r.get(k) is None for k in keys) else fmt(r) for r in results.values()))
             for label, keys, fmt in spec]
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths,
                                                                                                      strict=True)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


@click.command("sim")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), required=True, help="JSON file to write.")
@click.option("--episodes", type=click.IntRange(min=1), default=10, show_default=True,
              help="Episodes per env timing (E = 1 and E = N).")
@click.option("--n-envs", type=click.IntRange(min=1), default=8, show_default=True,
              help="N: envs stepped per call in the vectorised timing.")
@click.option("--system", "systems", multiple=True, default=DEFAULT_SYSTEMS, show_default=True,
              help="System to benchmark (repeat for several).")
@click.option("--steps", "n_steps", type=click.IntRange(min=1), default=None,
              help="Control steps of the reference schedule [default: the system's episode length].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the schedule and the actions.")
@exit_on_user_error
def bench_sim(out_file: str, episodes: int, n_envs: int, systems: tuple[str, ...], n_steps: int | None,
              seed: int) -> None:
    """Control steps/s of PGSim against odeint and a NumPy twin, with the voltage error of each.

    Prints a table and writes JSON with, per system, steps_per_s (agent decisions, env.step x E, of the
    vectorised env with E = 1; steps_per_s_vec with E = N; each episode's 0.4 s warm-up is in the wall
    time, not in the count), sim_s_per_wall_s (warm-up included), odeint_steps_per_s and
    numpy_steps_per_s (one seeded episode schedule, warm-up time included), and max_err_pu /
    odeint_max_err_pu (largest DG voltage gap to a tight Radau solve of the original r_N equations), plus
    machine information. Compile time is excluded; BLAS runs on one thread. A reference solve that fails
    leaves its figures null and its error text under failures; the others are still written.
    """
    reference = reference_module()
    results: dict[str, dict[str, Any]] = {}
    machine = machine_info()
    with single_threaded_blas() as n_blas:
        for name in systems:
            results[name] = bench_system(load_system(name), episodes, n_envs, n_steps, seed)
    click.echo(format_table(results))
    doc = {**results, "machine": {**machine, "blas_libraries_on_one_thread": n_blas},
           "settings": {"episodes": episodes, "n_envs_vec": n_envs, "seed": seed, "systems": list(systems),
                        "odeint_rtol": reference.ODEINT_RTOL, "odeint_atol": reference.ODEINT_ATOL,
                        "radau_rtol": reference.RADAU_RTOL, "radau_atol": reference.RADAU_ATOL,
                        "r_n_ohm": reference.R_N_OHM}}
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    click.echo(f"wrote {out}")
    for name, figures in results.items():
        for solver, message in figures["failures"].items():
            click.echo(f"warning: {name}: {solver} failed ({message}); its figures are null in {out}", err=True)
