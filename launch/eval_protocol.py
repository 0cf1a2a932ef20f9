"""The evaluation protocol every evaluated policy follows, learned or conventional: the same seeds and one
summary.json layout, so that the report compares runs and controllers number for number."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from launch.jsonfile import write_json

SEED_STRIDE = 25  # evaluation seeds S, S+25, S+50, ...: the protocol's 2000, 2025, ..., 2475 for S = 2000


def evaluation_seeds(first: int, episodes: int) -> list[int]:
    """The seeds of `episodes` evaluation episodes starting at `first`."""
    return [first + SEED_STRIDE * k for k in range(episodes)]


def write_eval_summary(path: Path, head: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                       tail: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write and return the summary.json of an evaluation: `head` (what was evaluated), the episodes and
    seeds, the means over episodes of the per-episode metrics in `rows` (each with seed, return,
    violation_rate, settling_step, max_dev_pu), `tail` (e.g. wall time), then the rows themselves."""
    returns = np.array([r["return"] for r in rows])
    summary = {**head, "episodes": len(rows), "seeds": [r["seed"] for r in rows],
               "mean_return": float(returns.mean()), "std_return": float(returns.std()),
               "violation_rate": float(np.mean([r["violation_rate"] for r in rows])),
               "mean_settling_step": float(np.mean([r["settling_step"] for r in rows])),
               "max_dev_pu": float(np.max([r["max_dev_pu"] for r in rows])),
               **(tail or {}), "per_episode": list(rows)}
    write_json(path, summary)
    return summary
