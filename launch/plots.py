"""PNG figures people look at: voltage/frequency traces and learning curves (`powernet plot`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from launch.training_curves import read_metrics, smooth  # noqa: E402


def plot_trace(trace: dict[str, np.ndarray], path: Path, title: str = "", band: bool = True) -> None:
    """DG voltages (p.u., with the 0.95/1.05 band) above DG frequencies (Hz), against time (s)."""
    t = trace["t"]
    fig, (ax_v, ax_f) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for i in range(trace["v_pu"].shape[1]):
        ax_v.plot(t, trace["v_pu"][:, i], lw=1.2, label=f"DG {i + 1}")
        ax_f.plot(t, trace["f_hz"][:, i], lw=1.0)
    if band:
        for level in (0.95, 1.05):
            ax_v.axhline(level, color="k", ls="--", lw=0.8)
        ax_v.axhline(1.0, color="0.6", ls=":", lw=0.8)
    ax_v.set_ylabel("voltage (p.u.)")
    ax_f.set_ylabel("frequency (Hz)")
    ax_f.set_xlabel("time (s)")
    ax_v.set_title(title)
    n_dg = trace["v_pu"].shape[1]
    ax_v.legend(ncol=min(n_dg, 10), fontsize=7, loc="lower right")
    ax_v.grid(alpha=0.3)
    ax_f.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_learning_curves(metrics: dict[str, np.ndarray], out_dir: Path, title: str = "") -> list[Path]:
    """return.png (episode return vs env steps, raw and smoothed), losses.png and violations.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = metrics["env_steps"]
    window = max(1, min(len(steps), max(5, len(steps) // 20)))
    written = []

    fig, ax = plt.subplots(figsize=(8, 4.5))
    ret = metrics.get("episode_return", np.full_like(steps, np.nan))
    ok = np.isfinite(ret)
    ax.plot(steps[ok], ret[ok], lw=0.6, alpha=0.35, color="C0", label="episode return")
    ax.plot(steps, smooth(ret, window), lw=2.0, color="C0", label=f"moving average ({window} updates)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(title or "training return")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    written.append(out_dir / "return.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    names = [k for k in ("loss", "policy_loss", "value_loss", "entropy", "grad_norm") if k in metrics]
    if names:
        fig, axes = plt.subplots(len(names), 1, figsize=(8, 1.8 * len(names) + 0.8), sharex=True, squeeze=False)
        for ax, name in zip(axes[:, 0], names, strict=True):
            ax.plot(steps, metrics[name], lw=0.5, alpha=0.35, color="C1")
            ax.plot(steps, smooth(metrics[name], window), lw=1.5, color="C1")
            ax.set_ylabel(name, fontsize=8)
            ax.grid(alpha=0.3)
        axes[-1, 0].set_xlabel("environment steps")
        axes[0, 0].set_title(f"{title} losses" if title else "losses")
        fig.tight_layout()
        written.append(out_dir / "losses.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)

    if "violation_rate" in metrics:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.plot(steps, metrics["violation_rate"], lw=0.5, alpha=0.35, color="C3")
        ax.plot(steps, smooth(metrics["violation_rate"], window), lw=2.0, color="C3")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("share outside [0.95, 1.05] p.u.")
        ax.set_title(f"{title} voltage violations" if title else "voltage violations")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        written.append(out_dir / "violations.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def plot_run(run_dir: Path, max_traces: int = 4) -> list[Path]:
    """Learning curves from RUN/metrics.csv and, when RUN/eval/ holds episode traces, voltage traces of the
    first `max_traces` of them; all into RUN/plots/. Returns the files written."""
    run = Path(run_dir)
    out = run / "plots"
    metrics = read_metrics(run / "metrics.csv")
    title = run.name
    cfg = run / "config.toml"
    if cfg.is_file():
        import tomllib

        try:
            data = tomllib.loads(cfg.read_text())
            title = f"{run.name}: {data['model']['algorithm']} on {data['env']['system']}"
        except (tomllib.TOMLDecodeError, KeyError, TypeError):
            pass
    written = plot_learning_curves(metrics, out, title)
    for path in sorted((run / "eval").glob("episode-*.npz"))[:max_traces]:
        with np.load(path) as data:
            if "v_pu" not in data or "f_hz" not in data:
                continue
            trace = {k: data[k] for k in ("v_pu", "f_hz")}
        dt = control_dt_s(cfg)
        trace["t"] = dt * np.arange(1, trace["v_pu"].shape[0] + 1)
        target = out / f"eval-{path.stem}.png"
        plot_trace(trace, target, title=f"{title}, greedy evaluation {path.stem}")
        written.append(target)
    return written


def control_dt_s(cfg_path: Path) -> float:
    """The control interval (s) of the run's system, from its system file (older run configs also carry it
    as env.control_dt_s); 0.05 s, every shipped system's, when neither can be read."""
    import tomllib

    from common.errors import InputError
    from simsvc.systems import load_system

    try:
        env = tomllib.loads(cfg_path.read_text()).get("env", {})
        if "control_dt_s" in env:
            return float(env["control_dt_s"])
        return float(load_system(env.get("system", "microgrid-6")).control_dt_s)
    except (OSError, tomllib.TOMLDecodeError, InputError, AttributeError, TypeError, ValueError):
        return 0.05


def return_change(metrics: dict[str, np.ndarray], share: float = 0.1) -> tuple[float, float]:
    """Mean episode return over the first and over the last `share` of the updates (NaN when none ended)."""
    ret = metrics.get("episode_return", np.array([]))
    k = max(1, int(round(share * len(ret))))

    def mean(part: np.ndarray) -> float:
        part = part[np.isfinite(part)]
        return float(part.mean()) if part.size else float("nan")

    return mean(ret[:k]), mean(ret[-k:])


def plot_eval_curves(series: list[dict], references: list[tuple[str, float]], path: Path, title: str) -> None:
    """Greedy evaluation return against env steps, one line per run, a dashed grey line per reference; the
    legend sits under the axes so that it hides no curve."""
    entries = len(series) + len(references)
    fig, ax = plt.subplots(figsize=(9, 4.6 + 0.22 * entries))
    for i, s in enumerate(series):
        ax.plot(s["env_steps"], s["eval_return"], marker="o", ms=3, lw=1.6, color=f"C{i % 10}", label=s["label"])
    dashes = [(6, 2), (2, 2), (8, 3, 2, 3), (1, 1), (4, 1, 1, 1)]
    for j, (name, value) in enumerate(references):
        ax.axhline(value, color=str(0.15 + 0.5 * (j % 3) / 2), dashes=dashes[j % len(dashes)], lw=1.1, label=name)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("greedy evaluation return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1 if entries <= 6 else 2,
              frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
