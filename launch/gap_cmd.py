"""`powernet gap`: the information gap of scenarios on one system (docs/scenarios.md#the-information-gap).

For each scenario: fit the per-DG constants and the local rule (and, with sensor faults, the neighbour rule) on
training seeds, run droop, secondary, the local rule, the fitted rules and the oracle look-ahead on the
evaluation seeds, and report the gap, (oracle − best local) / (oracle − droop), and the share of it the
neighbour rule wins back. Writes OUT/SHORT-SCENARIO.json per scenario, OUT/gap-SHORT.md (the
table) and, with --figures, OUT/SHORT-SCENARIO.png (DG voltages of the strongest non-oracle controller and
droop on the first evaluation seed). --table-only runs nothing: it rebuilds OUT/gap-SHORT.md from the
scenarios' JSON files already in OUT (measured by separate calls, e.g. one per scenario).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from launch.errors import exit_on_user_error

TRAIN_SEEDS = (0, 8)  # first training seed and count for the fitted rules: far below the evaluation seeds
LABELS = {"droop": "droop", "secondary": "secondary", "local": "local rule", "per-dg-fit": "per-DG constants (fitted)",
          "local-fit": "local rule (fitted)", "neighbour-fit": "neighbour rule (fitted)", "oracle": "oracle look-ahead"}


@click.command("gap")
@click.option("--system", "system_name", default="microgrid-6", show_default=True,
              help="a shipped system's name or the path of a system TOML file")
@click.option("--scenario", "scenarios", default="classic,paper,stress,sharing,loadbus,delayed", show_default=True,
              help="comma-separated scenario names or files (configs/scenarios/)")
@click.option("--episodes", type=int, default=20, show_default=True, help="evaluation episodes")
@click.option("--seed", type=int, default=2000, show_default=True,
              help="first evaluation seed; episode k uses seed + 25 k (the protocol's 2000, 2025, ..., 2475)")
@click.option("--train-seeds", type=int, default=TRAIN_SEEDS[1], show_default=True,
              help=f"training seeds {TRAIN_SEEDS[0]}..N-1 the fitted rules are fitted on")
@click.option("--fit-sweeps", type=int, default=2, show_default=True,
              help="coordinate-search sweeps of the fitted rules (per-DG constants, fitted local rule)")
@click.option("--reuse", "reuse_dir", type=click.Path(file_okay=False),
              help="a folder of earlier results (SHORT-SCENARIO.json) of the same seeds and sweeps: their fitted "
                   "rules and controller rows are kept, only what they lack is fitted and run")
@click.option("--figures/--no-figures", default=True, show_default=True, help="write a voltage-trace PNG per scenario")
@click.option("--table-only", is_flag=True,
              help="measure nothing: write OUT/gap-SHORT.md from the listed scenarios' OUT/SHORT-SCENARIO.json")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="output folder")
@exit_on_user_error
def gap(system_name: str, scenarios: str, episodes: int, seed: int, train_seeds: int, fit_sweeps: int,
        reuse_dir: str | None, figures: bool, table_only: bool, out_dir: str) -> None:
    """Measure the information gap of scenarios: oracle against the best rule a DG can run alone."""
    from common.errors import InputError
    from launch.eval_protocol import evaluation_seeds
    from launch.provenance import git_commit, has_uncommitted_changes
    from launch.study_spec import short_name
    from simsvc.scenarios import load_scenario
    from simsvc.systems import load_system

    if episodes < 1 or train_seeds < 1 or fit_sweeps < 1:
        raise InputError("--episodes, --train-seeds and --fit-sweeps must be at least 1")
    eval_seeds = evaluation_seeds(seed, episodes)
    fit_seeds = list(range(TRAIN_SEEDS[0], TRAIN_SEEDS[0] + train_seeds))
    if set(fit_seeds) & set(eval_seeds):
        raise InputError("the training seeds overlap the evaluation seeds: choose fewer --train-seeds or another "
                         "--seed")
    system = load_system(system_name)
    chosen = [load_scenario(name.strip()) for name in scenarios.split(",") if name.strip()]  # all checked first
    out = Path(out_dir)
    short = short_name(system_name)
    if table_only:
        results = {sc.name: measured(out / f"{short}-{sc.name}.json", system.name, sc.name) for sc in chosen}
        table = gap_table(system.name, results)
        (out / f"gap-{short}.md").write_text(table)
        click.echo(table)
        return
    from simsvc.gap import measure_gap

    out.mkdir(parents=True, exist_ok=True)
    command = "powernet gap " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "powernet gap"
    results = {}
    for sc in chosen:
        click.echo(f"{system.name} · {sc.name}")
        t0 = time.monotonic()
        earlier = reusable(reuse_dir, f"{short}-{sc.name}.json", system.name, sc.name, eval_seeds, fit_seeds,
                           fit_sweeps)
        result = measure_gap(system, sc, eval_seeds, fit_seeds, say=click.echo, fit_sweeps=fit_sweeps,
                             reuse=earlier)
        if earlier:
            result["reused"] = {"from": str(Path(reuse_dir or ".") / f"{short}-{sc.name}.json"),
                                "commit": earlier.get("commit"), "command": earlier.get("command"),
                                "wall_s": earlier.get("wall_s")}
        result.update({"system": system.name, "scenario": sc.name, "eval_seeds": eval_seeds,
                       "train_seeds": fit_seeds, "fit_sweeps": fit_sweeps, "wall_s": round(time.monotonic() - t0, 1),
                       "command": command, "commit": git_commit(), "uncommitted_changes": has_uncommitted_changes()})
        (out / f"{short}-{sc.name}.json").write_text(json.dumps(result, indent=1) + "\n")
        if figures:
            _figure(system, sc, result, out / f"{short}-{sc.name}.png")
        results[sc.name] = result
        if result.get("gap") is not None:
            click.echo(f"  gap {100 * result['gap']:.1f} % of droop-to-oracle ({result['best_local']} best local)")
        if result.get("neighbour_share") is not None:
            click.echo(f"  the neighbour rule wins back {100 * result['neighbour_share']:.0f} % of it")
    table = gap_table(system.name, results)
    (out / f"gap-{short}.md").write_text(table)
    click.echo(table)
    click.echo(f"wrote {out}")


def read_result(path: Path, option: str) -> Any:
    """The JSON of an earlier result file; InputError naming the command-line `option` that pointed at it when
    the file is missing or unreadable."""
    from common.errors import InputError

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{option}: cannot read {path}: {exc}") from None


def measured(path: Path, system: str, scenario: str) -> dict[str, Any]:
    """An earlier `powernet gap` result of this system and scenario (for --table-only); InputError when the
    file is missing, unreadable or measured something else."""
    from common.errors import InputError

    result = read_result(path, "--table-only")
    if not isinstance(result, dict) or not isinstance(result.get("controllers"), dict):
        raise InputError(f"--table-only: {path} is not a `powernet gap` result")
    if (result.get("system"), result.get("scenario")) != (system, scenario):
        raise InputError(f"--table-only: {path} measured {result.get('system')} · {result.get('scenario')}, "
                         f"not {system} · {scenario}")
    return result


def reusable(folder: str | None, name: str, system: str, scenario: str, eval_seeds: list[int],
             train_seeds: list[int], fit_sweeps: int) -> dict[str, Any] | None:
    """The earlier result folder/name when it measured the same system, scenario, seeds and sweeps (None
    without a folder or file); one that measured something else is refused, not silently mixed in."""
    from common.errors import InputError

    path = Path(folder or "") / name
    if folder is None or not path.is_file():
        return None
    earlier = read_result(path, "--reuse")
    wanted = {"system": system, "scenario": scenario, "eval_seeds": eval_seeds, "train_seeds": train_seeds,
              "fit_sweeps": fit_sweeps}
    differ = [k for k, v in wanted.items() if not isinstance(earlier, dict) or earlier.get(k) != v]
    if differ or not isinstance(earlier.get("controllers"), dict) or not isinstance(earlier.get("fitted"), dict):
        raise InputError(f"--reuse: {path} measured other {', '.join(differ) or 'contents'} than this run asks for")
    return earlier


def gap_table(system_name: str, results: dict[str, dict[str, Any]]) -> str:
    """A Markdown table: one row per scenario, mean evaluation returns of every controller, the gap and the
    share of it the neighbour rule wins back."""
    names = ["droop", "secondary", "local", "per-dg-fit", "local-fit", "neighbour-fit", "oracle"]
    head = "| scenario | " + " | ".join(LABELS[n] for n in names) + " | best local | gap | neighbour rule's share |\n"
    lines = [f"{system_name}, mean evaluation return over the evaluation seeds\n\n", head,
             "|" + "---|" * (len(names) + 4) + "\n"]
    for scenario, result in results.items():
        rows = result["controllers"]
        cells = [f"{rows[n]['mean_return']:.3f}" if n in rows else "–" for n in names]
        gap_value, share = result.get("gap"), result.get("neighbour_share")
        gap_text = "–" if gap_value is None else f"{100 * gap_value:.1f} %"
        share_text = "–" if share is None else f"{100 * share:.0f} %"
        lines.append(f"| {scenario} | " + " | ".join(cells)
                     + f" | {result.get('best_local', '–')} | {gap_text} | {share_text} |\n")
    return "".join(lines)


def _figure(system: Any, scenario: Any, result: dict[str, Any], path: Path) -> None:
    """DG voltages on the first evaluation seed under droop and the strongest non-oracle controller, fine
    trace (every 10 ms, warm-up included)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from simsvc.gap import strongest_baseline, trace_episode

    rows = result["controllers"]
    strongest = strongest_baseline(rows)
    seed = result["eval_seeds"][0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    for ax, name in zip(axes, (strongest, "droop"), strict=True):
        trace = trace_episode(system, scenario, seed, name, result["fitted"])
        voltage_panel(ax, trace, f"{LABELS[name]} (mean return {rows[name]['mean_return']:.2f})")
    axes[0].set_ylabel("DG voltage (p.u.)")
    fig.suptitle(f"{system.name} · scenario {scenario.name} · seed {seed}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def voltage_panel(ax: Any, trace: dict[str, Any], title: str) -> None:
    """One panel of a voltage-trace figure: every DG's voltage (p.u.) over time, the ±5 % band shaded."""
    ax.plot(trace["t"], trace["v_pu"], lw=0.9)
    ax.axhspan(0.95, 1.05, color="green", alpha=0.08)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("time (s)")
