"""The report's figures (PNG): learning curves with 95 % bands over training seeds, DG voltage trajectories
of the best run against the controllers, and the α/β heat map of a sweep."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from launch.report_stats import t_critical
from launch.run_state import last_env_steps
from launch.study_results import Group
from launch.training_curves import curve_on_grid


def _plt() -> Any:
    """pyplot on the Agg backend, imported when the first figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(groups: Sequence[Group], system: str, path: Path) -> bool:
    """Training return vs env steps: per group the mean over seeds and its 95 % t-band; False if no data."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 5))
    drawn = 0
    mine = [g for g in groups if g.system == system]
    palette = plt.get_cmap("tab10" if len(mine) <= 10 else "tab20")  # a sweep has more lines than tab10 colours
    for k, group in enumerate(mine):
        ends = [last_env_steps(r.run_dir / "metrics.csv") for r in group.finished]
        if not ends or max(ends) == 0:
            continue
        grid = np.linspace(0, max(ends), 200)
        curves = [c for c in (curve_on_grid(r.run_dir, grid) for r in group.finished) if c is not None]
        if not curves:
            continue
        stack = np.vstack(curves)
        n = np.isfinite(stack).sum(axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (no run reached those steps)
            mean = np.nanmean(stack, axis=0)
            sd = np.nanstd(stack, axis=0, ddof=1) if stack.shape[0] > 1 else np.zeros_like(grid)
        label = group.algorithm if group.tag == "base" else f"{group.algorithm} {group.tag}"
        color = palette(k % palette.N)
        ax.plot(grid, mean, color=color, lw=1.8, label=f"{label} ({len(curves)} seed{'s' * (len(curves) > 1)})")
        if stack.shape[0] > 1:
            tcrit = np.array([t_critical(int(c) - 1) if c > 1 else np.nan for c in n])
            half = tcrit * sd / np.sqrt(np.maximum(n, 1))
            ax.fill_between(grid, mean - half, mean + half, color=color, alpha=0.18, lw=0)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xlabel("environment steps")
    ax.set_ylabel("training episode return (smoothed)")
    ax.set_title(f"Learning curves on {system}: mean over training seeds, band = 95 % t-interval")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if drawn > 8 else 1, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_voltages(panels: Sequence[tuple[str, np.ndarray]], control_dt_s: float, path: Path, title: str) -> None:
    """Every DG's voltage (p.u.) against time, one panel per controller, the 0.95/1.05 band dashed."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), sharey=True, squeeze=False)
    for ax, (name, v_pu) in zip(axes[0], panels, strict=True):
        t = control_dt_s * np.arange(1, v_pu.shape[0] + 1)
        for i in range(v_pu.shape[1]):
            ax.plot(t, v_pu[:, i], lw=1.1, marker=".", ms=3, label=f"DG {i + 1}")
        for level in (0.95, 1.05):
            ax.axhline(level, color="k", ls="--", lw=0.8)
        ax.axhline(1.0, color="0.6", ls=":", lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("time (s)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("DG voltage (p.u.)")
    if panels and panels[0][1].shape[1] <= 10:
        axes[0, -1].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_heatmap(cells: dict[tuple[float, float], tuple[float, float, int]], path: Path, title: str) -> None:
    """Mean evaluation return over seeds for each (α, β), annotated with mean ± 95 % half-width."""
    plt = _plt()
    alphas = sorted({a for a, _ in cells})
    betas = sorted({b for _, b in cells})
    grid = np.full((len(alphas), len(betas)), np.nan)
    for (a, b), (mean, _, _) in cells.items():
        grid[alphas.index(a), betas.index(b)] = mean
    fig, ax = plt.subplots(figsize=(1.6 * len(betas) + 2.5, 0.9 * len(alphas) + 1.8))
    image = ax.imshow(grid, cmap="viridis", aspect="auto", origin="lower")
    fig.colorbar(image, ax=ax, label="evaluation return (mean over seeds)")
    finite = grid[np.isfinite(grid)]
    mid = float(finite.mean()) if finite.size else 0.0
    for (a, b), (mean, half, n) in cells.items():
        text = f"{mean:.2f}" + (f"\n±{half:.2f}" if n > 1 else "\n(1 seed)")
        ax.text(betas.index(b), alphas.index(a), text, ha="center", va="center", fontsize=8,
                color="white" if mean < mid else "black")
    ax.set_xticks(range(len(betas)), [f"{b:g}" for b in betas])
    ax.set_yticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    ax.set_xlabel("action smoothing β (env.smoothing_beta)")
    ax.set_ylabel("spatial discount α (train.spatial_discount)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
