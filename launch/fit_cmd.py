"""`powernet fit-baselines`: fit the `constant` and `per-dg` set-points of a system on training seeds and
store them as data (fitted/NAME.toml beside the system file) with the seeds and commit that produced them."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import click

from launch.errors import exit_on_user_error

TRAINING_SEEDS = (0, 32)  # first training seed and count: far below the evaluation seeds (2000 and up)


@click.command("fit-baselines")
@click.option("--system", "system_name", default="microgrid-6", show_default=True,
              help="a shipped system's name or the path of a system TOML file")
@click.option("--first-seed", type=int, default=TRAINING_SEEDS[0], show_default=True, help="first training seed")
@click.option("--seeds", "n_seeds", type=int, default=TRAINING_SEEDS[1], show_default=True,
              help="training seeds: first-seed .. first-seed + seeds - 1 (far below the evaluation seeds)")
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="where to write [default: fitted/NAME.toml beside the system file]")
@exit_on_user_error
def fit_baselines(system_name: str, first_seed: int, n_seeds: int, out_path: str | None) -> None:
    """Fit the constant and per-DG set-point baselines on training seeds; write them as TOML."""
    import tomli_w

    from common.errors import InputError
    from launch.eval_protocol import evaluation_seeds
    from launch.provenance import git_commit, has_uncommitted_changes
    from simsvc.controllers import fitted_path
    from simsvc.fitting import fit_setpoints
    from simsvc.systems import load_system

    if n_seeds < 1 or first_seed < 0:
        raise InputError("--seeds must be at least 1 and --first-seed not negative")
    if set(range(first_seed, first_seed + n_seeds)) & set(evaluation_seeds(2000, 20)):
        raise InputError("the training seeds overlap the evaluation seeds 2000, 2025, ..., 2475: choose others")
    system = load_system(system_name)
    click.echo(f"fitting set-points of {system.name} on training seeds {first_seed}..{first_seed + n_seeds - 1}")
    fitted = fit_setpoints(system, first_seed, n_seeds)
    dirty = " (with uncommitted changes)" if has_uncommitted_changes() else ""
    header = (f"# Fitted by `powernet fit-baselines --system {system_name} --first-seed {first_seed} --seeds "
              f"{n_seeds}`\n# on {datetime.now(timezone.utc):%Y-%m-%d} at commit {git_commit()}{dirty}.\n"
              "# Episodes with loads fixed per episode, as in evaluation; set-points from the agents' discrete\n"
              "# choices, scored by the mean episode return on the training seeds.\n")
    doc = {"system": system.name, "training_seeds": {"first": first_seed, "count": n_seeds},
           "disturbance": "episode", **fitted}
    path = Path(out_path) if out_path else fitted_path(system)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + tomli_w.dumps(doc))
    click.echo(f"constant: {fitted['constant']['setpoints_v'][0]:.1f} V for every DG, training return "
               f"{fitted['constant']['train_return']:.3f}")
    click.echo(f"per-dg:   {fitted['per_dg']['setpoints_v']} V, training return {fitted['per_dg']['train_return']:.3f}")
    click.echo(f"wrote {path}")
