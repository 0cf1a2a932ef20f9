"""`powernet traces`: DG voltage traces of one scenario under the best learned policy, the strongest baseline of
a `powernet gap` result and droop, three panels side by side (results/scenarios/README.md#voltage-traces).

Every run given is evaluated greedily on --select-episodes protocol seeds (--seed, --seed + 25, ...) of the gap
file's scenario; the one with the highest mean return is drawn on --seed, with the fine trace (every 10 ms,
warm-up included). Writes OUT.png and OUT.json (the command, the commit, every run's returns, the choice, the
baseline's and droop's returns on the same seeds).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from launch.errors import exit_on_user_error


@click.command("traces")
@click.option("--gap", "gap_path", type=click.Path(), required=True,
              help="a `powernet gap` JSON file (results/scenarios/SHORT-SCENARIO.json): system, scenario, baselines")
@click.option("--run", "runs", type=click.Path(), multiple=True, required=True,
              help="a trained run directory (config.toml, checkpoints/); repeat to choose the best of several")
@click.option("--checkpoint", type=click.Choice(["latest", "best"]), default="latest", show_default=True)
@click.option("--seed", type=int, default=2000, show_default=True,
              help="the episode drawn, and the first selection seed (the protocol's first evaluation seed)")
@click.option("--select-episodes", type=int, default=20, show_default=True,
              help="episodes (seeds --seed, --seed + 25, ...) every run, the baseline and droop are scored on")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True,
              help="the figure (.png); the JSON record goes next to it")
@exit_on_user_error
def traces(gap_path: str, runs: tuple[str, ...], checkpoint: str, seed: int, select_episodes: int,
           out_path: str) -> None:
    """Voltage traces of a scenario: best learned policy, strongest baseline and droop side by side."""
    from common.errors import InputError
    from launch.eval_protocol import evaluation_seeds
    from launch.gap_cmd import LABELS
    from launch.provenance import git_commit, has_uncommitted_changes
    from launch.traces import LearnedPolicy, controller_returns, controller_trace, draw_traces, read_gap_file
    from simsvc.gap import strongest_baseline

    if select_episodes < 1:
        raise InputError("--select-episodes must be at least 1")
    out = Path(out_path)
    if out.suffix != ".png":
        raise InputError(f"--out must name a .png file, got {out}")
    t0 = time.monotonic()
    gap = read_gap_file(gap_path)
    system, scenario = gap["system"], gap["scenario"]
    policies = [LearnedPolicy(run, checkpoint, system) for run in runs]  # every input checked before any work
    seeds = evaluation_seeds(seed, select_episodes)
    considered = []
    for policy in policies:
        returns = policy.returns(scenario, seeds)
        considered.append({"run": str(policy.run), "algorithm": policy.algorithm,
                           "trained_scenario": policy.trained_scenario,
                           "mean_return": float(sum(returns) / len(returns)), "returns": returns})
        click.echo(f"  {policy.run.name:28s} mean return {considered[-1]['mean_return']:8.3f}")
    best = max(range(len(policies)), key=lambda k: considered[k]["mean_return"])
    chosen, row = policies[best], considered[best]
    baseline = strongest_baseline(gap["controllers"])
    refs = {}
    for name in (baseline, "droop"):
        returns = controller_returns(gap, name, seeds)
        refs[name] = {"name": name, "label": LABELS.get(name, name), "mean_return": float(sum(returns) / len(returns)),
                      "returns": returns, "gap_file_mean_return": gap["controllers"][name]["mean_return"]}
        click.echo(f"  {name:28s} mean return {refs[name]['mean_return']:8.3f}")

    learned_trace, drawn_return = chosen.trace(scenario, seed)
    on = f"{select_episodes} evaluation seeds"
    picked = f",\nbest of {len(policies)} runs (selected on these seeds)" if len(policies) > 1 else ""
    trained = "" if chosen.trained_scenario == scenario else f", trained on {chosen.trained_scenario}"
    panels = [(f"learned: {chosen.algorithm} ({chosen.run.name}{trained})\n"
               f"mean return {row['mean_return']:.2f} on the {on}{picked}", learned_trace)]
    for name in (baseline, "droop"):
        head = "strongest baseline: " if name == baseline else ""
        panels.append((f"{head}{refs[name]['label']}\nmean return {refs[name]['mean_return']:.2f} on the {on}",
                       controller_trace(gap, name, seed)))
    out.parent.mkdir(parents=True, exist_ok=True)
    draw_traces(out, panels, f"{system} · scenario {scenario} · DG voltages on seed {seed}")
    record = {
        "command": "powernet traces " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "powernet traces",
        "commit": git_commit(), "uncommitted_changes": has_uncommitted_changes(), "gap_file": str(gap_path),
        "system": system, "scenario": scenario, "checkpoint": checkpoint, "seed_drawn": seed,
        "select_episodes": select_episodes, "selection_seeds": seeds,
        "selection_note": f"mean returns over {select_episodes} protocol evaluation seeds; the run drawn is the one "
                          "with the highest mean return on these seeds (selected on the evaluation seeds)",
        "chosen": {**row, "drawn_episode_return": drawn_return},
        "baseline": refs[baseline], "droop": refs["droop"], "runs": considered,
        "wall_s": round(time.monotonic() - t0, 1),
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    click.echo(f"chose {chosen.run} ({row['mean_return']:.3f}; {LABELS.get(baseline, baseline)} "
               f"{refs[baseline]['mean_return']:.3f}, droop {refs['droop']['mean_return']:.3f}); wrote {out}")
