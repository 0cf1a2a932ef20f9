"""TensorBoard scalars shared by the local trainer and the learner service: one metrics.csv row becomes
one scalar per column, under the group architecture.md names (charts/, losses/, system/)."""

from __future__ import annotations

from typing import Any, Protocol


class ScalarWriter(Protocol):
    """What `log_scalars` needs of a writer (torch.utils.tensorboard.SummaryWriter has it)."""

    def add_scalar(self, tag: str, scalar_value: float, global_step: int) -> Any: ...


# TensorBoard group of each metrics.csv column; "update" and "env_steps" are the axes, env_steps being the
# global step.
TB_GROUPS = {"reward_mean": "charts", "episode_return": "charts", "episodes": "charts",
             "violation_rate": "charts", "diverged": "charts", "lr": "charts",
             "loss": "losses", "policy_loss": "losses", "value_loss": "losses", "entropy": "losses",
             "grad_norm": "losses", "update": "system", "wall_s": "system", "policy_lag": "system"}


def log_scalars(tb: ScalarWriter, row: dict[str, Any], step: int) -> None:
    """Write one metrics.csv row to TensorBoard under the same names, skipping empty cells (no episode
    ended in this window)."""
    for name, group in TB_GROUPS.items():
        value = row.get(name, "")
        if value != "" and value is not None:
            tb.add_scalar(f"{group}/{name}", float(value), step)
