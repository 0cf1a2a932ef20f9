"""PNG figures people look at: voltage/frequency traces (learning curves join later)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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
