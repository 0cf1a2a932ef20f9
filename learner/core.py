"""What the learner does with each batch, the same in every training mode: the update, the metrics row with
every diagnostic, TensorBoard, the log line, checkpoints and resume.

`--mode local` feeds it windows from its own collector; the learner service feeds it the rollouts its
actors sent (sync: one per actor of the current version; async: a lag-bounded batch). Both hand over the
batch, the per-window summaries the actors send as rollout meta (`actor.rollout.window_meta`) and the
batch's policy lags, so a local run and a sync run write the same rows. See docs/architecture.md#checkpoints for the
payload.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.config import Config
from common.errors import InputError
from common.metrics_csv import open_metrics
from common.nets.base import GraphActorCritic
from common.rollout import Rollout
from common.seeding import global_rng_state, set_global_rng_state
from common.tb import log_scalars
from learner.checkpoint import keep_previous, load_checkpoint, save_checkpoint
from learner.update import learning_rate, make_optimizer, scheduled, set_learning_rate, update

# one row per update; the diagnostics are empty where the loss has none (PPO: clip_fraction, approx_kl;
# async a2c with V-trace: rho_mean, rho_clipped)
METRIC_FIELDS = ("update", "env_steps", "wall_s", "lr", "reward_mean", "episode_return", "episodes",
                 "violation_rate", "diverged", "loss", "policy_loss", "value_loss", "entropy", "grad_norm",
                 "clip_fraction", "approx_kl", "rho_mean", "rho_clipped", "policy_lag", "policy_lag_max",
                 "skipped_updates", "dropped")
LOSS_FIELDS = ("loss", "policy_loss", "value_loss", "entropy", "grad_norm")  # empty in the row of a skipped update
DIAGNOSTICS = ("clip_fraction", "approx_kl", "rho_mean", "rho_clipped")
CHECKPOINT_FORMAT = 2
RECENT_EPISODES = 100  # "recent return": the mean over this many last finished episodes
LATEST, PREVIOUS = "latest.pt", "previous.pt"  # the newest checkpoint and the one before it

# Streams: per env group (local) or actor (sync/async) k, where its seeded episodes and action sampler stand
# after its last window: {"episodes_done": int, "at_boundary": bool, "sampler_state": uint8 array or None}.
Streams = dict[int, dict[str, Any]]


class TrainingDiverged(InputError):
    """Too many updates in a row were skipped (non-finite or huge loss or gradients): the run stops with one
    line instead of training on garbage; the last checkpoint holds the weights before the trouble."""


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at `path` (see `_read_one`). When `path` is a run's latest.pt and cannot be read, the
    checkpoint before it (previous.pt) is used instead, with a warning in the learner's log: a run whose
    newest checkpoint was truncated or corrupted resumes from the one before."""
    path = Path(path)
    try:
        return _read_one(path)
    except InputError as exc:
        previous = path.with_name(PREVIOUS)
        if path.name != LATEST or not previous.exists():
            raise
        try:
            ckpt = _read_one(previous)
        except InputError:
            raise InputError(f"{exc} (and the checkpoint before it, {previous}, is not readable either)") from None
        logging.getLogger("powernet.learner").warning(
            "%s; resuming from the checkpoint before it, %s (update %d)", exc, previous, int(ckpt["updates"]))
        return ckpt


def _read_one(path: Path) -> dict[str, Any]:
    """A checkpoint in today's format; the two older formats (local trainer and learner service, before
    they shared this core) are converted. Anything else is refused with one line naming the file."""
    try:
        ckpt = load_checkpoint(path)
    except Exception as exc:  # a truncated or foreign file: torch raises several kinds
        raise InputError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(ckpt, dict) or not {"model", "optimizer", "updates", "env_steps"} <= ckpt.keys():
        raise InputError(f"{path}: not a PowerNet checkpoint (model, optimizer and counters missing)")
    fmt = ckpt.get("format", 1)
    if fmt == CHECKPOINT_FORMAT:
        return ckpt
    if fmt != 1:
        raise InputError(f"{path}: checkpoint format {fmt!r} is not known to this version (it reads 1 and "
                         f"{CHECKPOINT_FORMAT})")
    if "actors" in ckpt:  # the learner service's: the global generators and a stream per actor
        streams = {int(k): dict(v) for k, v in ckpt["actors"].items()}
        rng = ckpt.get("rng")
    else:  # the local trainer's: one stream, its sampler inside the rng states
        rng = dict(ckpt["rng"])
        sampler = rng.pop("sampler")
        streams = {0: {"episodes_done": int(np.max(ckpt["episodes_done"])),
                       "at_boundary": bool(ckpt["at_episode_boundary"]),
                       "sampler_state": np.asarray(sampler.numpy(), dtype=np.uint8)}}
    return {**ckpt, "format": CHECKPOINT_FORMAT, "rng": rng, "streams": streams}


class LearnerCore:
    """The optimiser, the counters and the run directory's records of one training run.

    `learn` runs one update; `record` writes its metrics row, TensorBoard scalars, the periodic log line and,
    when due, a checkpoint. They are two calls so that the learner service can publish the new weights in
    between, before the bookkeeping. `streams` is asked for the actors' (or env groups') positions only when
    a checkpoint is written.
    """

    def __init__(self, cfg: Config, model: GraphActorCritic, out_dir: str | Path, log: logging.Logger,
                 streams: Callable[[], Streams],
                 progress: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.cfg, self.model, self.log = cfg, model, log
        self.out = Path(out_dir)
        self.streams, self.progress = streams, progress
        self.optimiser = make_optimizer(model, cfg.train)
        self.updates = 0
        self.env_steps = 0
        self.skipped = 0              # updates skipped so far (no optimiser step: see learner.update.update)
        self._skipped_in_a_row = 0
        self._saved_at: int | None = None  # the update of the checkpoint last written by this process
        self.best = -np.inf
        self.recent: deque[float] = deque(maxlen=RECENT_EPISODES)
        self.recent_mean = float("nan")
        self.resumed = False
        self._next_ckpt = cfg.train.checkpoint_every
        self._wall_before = 0.0  # training seconds before the checkpoint this run resumed from
        self._start = time.perf_counter()
        self._metrics_fh = self._writer = self._tb = None

    @property
    def done(self) -> bool:
        return self.env_steps >= self.cfg.train.steps

    # ---------------------------------------------------------------------------------------------- resume

    def restore(self, ckpt: Mapping[str, Any]) -> Streams:
        """Continue from a checkpoint of `read_checkpoint`: model, optimiser, counters, best return and global
        generators; return the streams to hand to the actors or env groups."""
        self.model.load_state_dict(ckpt["model"])
        self.optimiser.load_state_dict(ckpt["optimizer"])
        self.updates, self.env_steps = int(ckpt["updates"]), int(ckpt["env_steps"])
        wall = ckpt.get("wall_s", 0.0)  # the clock goes on where the checkpoint left it (older ones: from 0)
        self._wall_before = float(wall) if isinstance(wall, (int, float)) and np.isfinite(wall) else 0.0
        self.best = float(ckpt.get("best_return", -np.inf))
        if ckpt.get("rng") is not None:
            set_global_rng_state(ckpt["rng"])
        self.resumed = True
        streams = {int(k): dict(v) for k, v in ckpt.get("streams", {}).items()}
        if any(not s.get("at_boundary", True) for s in streams.values()):
            self.log.warning("checkpoint taken mid-episode: resumed envs start fresh episodes, so this run will "
                             "not repeat an uninterrupted one exactly")
        self.log.info("resumed at update %d, %d env steps, episodes per stream %s", self.updates, self.env_steps,
                      {k: s.get("episodes_done") for k, s in sorted(streams.items())})
        return streams

    # ---------------------------------------------------------------------------------------------- records

    def open(self) -> None:
        """Open metrics.csv (a resumed run keeps its rows up to the checkpoint) and the TensorBoard writer."""
        from torch.utils.tensorboard import SummaryWriter

        self._metrics_fh, self._writer = open_metrics(self.out / "metrics.csv", METRIC_FIELDS,
                                                      self.updates if self.resumed else None)
        self._tb = SummaryWriter(log_dir=str(self.out / "tb"))
        self._start = time.perf_counter()
        tc = self.cfg.train
        self._next_ckpt = (self.env_steps // tc.checkpoint_every + 1) * tc.checkpoint_every

    def close(self) -> None:
        if self._metrics_fh is not None:
            self._metrics_fh.close()
            self._tb.close()
            self._metrics_fh = self._writer = self._tb = None

    def __enter__(self) -> LearnerCore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def wall_s(self) -> float:
        """Seconds of training: this process's since `open`, plus those before the checkpoint resumed from."""
        return self._wall_before + time.perf_counter() - self._start

    # ---------------------------------------------------------------------------------------------- updates

    def learn(self, batch: Rollout, off_policy: bool = False) -> dict[str, float]:
        """One update on `batch` at the scheduled learning rate and entropy coefficient; advances the counters.
        A skipped update (see `learner.update.update`) still counts as one, with unchanged weights, so that
        actors waiting for the next version go on; after train.max_skipped_updates of them in a row `record`
        stops the run."""
        set_learning_rate(self.optimiser, learning_rate(self.cfg.train, self.env_steps))
        self.model.train()
        stats = update(self.model, self.optimiser, batch, scheduled(self.cfg.train, self.env_steps),
                       off_policy=off_policy)
        self.updates += 1
        self.env_steps += int(batch.rewards.shape[0] * batch.rewards.shape[1])
        if not stats["skipped"]:
            self._skipped_in_a_row = 0
            return stats
        self.skipped += 1
        self._skipped_in_a_row += 1
        limit = self.cfg.train.max_skipped_updates
        self.log.warning("update %d skipped (%d in a row; the run stops at %d): loss %.4g, gradient norm %.4g; "
                         "weights and optimiser state unchanged", self.updates, self._skipped_in_a_row, limit,
                         stats["loss"], stats["grad_norm"])
        return stats

    def _stop_if_diverged(self, stats: Mapping[str, float]) -> None:
        limit = self.cfg.train.max_skipped_updates
        if self._skipped_in_a_row >= limit:
            message = (f"{limit} updates in a row were skipped (last at update {self.updates}: loss "
                       f"{stats['loss']:.4g}, gradient norm {stats['grad_norm']:.4g}, limit train.skip_grad_norm = "
                       f"{self.cfg.train.skip_grad_norm:g}); stopping: check the rewards, the learning rate and "
                       f"train.skip_grad_norm")
            self.log.error("%s", message)
            self._metrics_fh.flush()
            raise TrainingDiverged(message)

    def record(self, stats: Mapping[str, float], batch: Rollout, windows: Sequence[Mapping[str, Any]],
               lags: Sequence[int], dropped: int | None = None) -> dict[str, Any]:
        """Write the row of the update just learned; checkpoint when due. `windows` are the batch's window
        summaries (episodes, episode_return_sum, violations, diverged), `lags` its rollouts' policy lags."""
        episodes = sum(int(w.get("episodes", 0)) for w in windows)
        ep_sum = sum(float(w.get("episode_return_sum", 0.0)) for w in windows)
        if episodes:  # the deque keeps the last RECENT_EPISODES, so no more need to be made
            self.recent.extend([ep_sum / episodes] * min(episodes, RECENT_EPISODES))
            self.recent_mean = float(np.mean(self.recent))
        row = {"update": self.updates, "env_steps": self.env_steps, "wall_s": round(self.wall_s, 4),
               "lr": stats["lr"], "reward_mean": float(batch.rewards.mean(dtype=np.float64)),
               "episode_return": ep_sum / episodes if episodes else "", "episodes": episodes,
               "violation_rate": sum(float(w.get("violations", 0)) for w in windows) / batch.rewards.size,
               "diverged": sum(int(w.get("diverged", 0)) for w in windows),
               "loss": stats["loss"], "policy_loss": stats["policy_loss"], "value_loss": stats["value_loss"],
               "entropy": stats["entropy"], "grad_norm": stats["grad_norm"],
               **{key: stats.get(key, "") for key in DIAGNOSTICS},
               "policy_lag": sum(lags) / len(lags), "policy_lag_max": max(lags),
               "skipped_updates": self.skipped, "dropped": 0 if dropped is None else dropped}
        if stats.get("skipped"):  # no step was taken: its loss (NaN, or huge) describes nothing that happened
            row.update({key: "" for key in LOSS_FIELDS + DIAGNOSTICS})
        self._write_row(row)
        log_scalars(self._tb, row, self.env_steps)
        if self.progress is not None:
            self.progress(row)
        if self.updates % self.cfg.train.log_every == 0:
            self._metrics_fh.flush()
            self._tb.flush()
            self.log.info("update %d  env steps %d  recent return %.3f  loss %.4f  entropy %.3f  %.0f steps/s%s",
                          self.updates, self.env_steps, self.recent_mean, stats["loss"], stats["entropy"],
                          self.env_steps / max(self.wall_s, 1e-9),
                          "" if dropped is None else f"  dropped {dropped}")
        self._stop_if_diverged(stats)
        if self.env_steps >= self._next_ckpt:
            self.checkpoint()
            every = self.cfg.train.checkpoint_every
            self._next_ckpt = (self.env_steps // every + 1) * every
        return row

    def _write_row(self, row: dict[str, Any]) -> None:
        """Append a row to metrics.csv; if the file was deleted during the run, start a new one with the header
        first (and say so) rather than writing every later row into the deleted file."""
        try:
            deleted = os.fstat(self._metrics_fh.fileno()).st_nlink == 0
        except OSError:
            deleted = True
        if deleted:
            self._metrics_fh.close()
            self._metrics_fh, self._writer = open_metrics(self.out / "metrics.csv", METRIC_FIELDS)
            self.log.warning("metrics.csv was deleted during the run; a new one was started with its header at "
                             "update %d (earlier rows are lost)", self.updates)
        self._writer.writerow(row)

    def checkpoint(self) -> None:
        """Write checkpoints/latest.pt, keeping the one it replaces as previous.pt (the fallback of a resume
        whose latest.pt is broken), and best.pt when the recent return is the best so far."""
        if self._saved_at != self.updates:  # the final save right after a scheduled one keeps the older one
            keep_previous(self.out / "checkpoints" / LATEST, PREVIOUS)
        self._saved_at = self.updates
        payload = {"format": CHECKPOINT_FORMAT, "model": self.model.state_dict(),
                   "optimizer": self.optimiser.state_dict(), "updates": self.updates, "env_steps": self.env_steps,
                   "wall_s": self.wall_s, "config": self.cfg.to_dict(), "best_return": self.best,
                   "recent_return": self.recent_mean, "rng": global_rng_state(),
                   "streams": {k: dict(v) for k, v in self.streams().items()}}
        save_checkpoint(self.out / "checkpoints" / LATEST, payload)
        if np.isfinite(self.recent_mean) and self.recent_mean > self.best:
            self.best = payload["best_return"] = self.recent_mean
            save_checkpoint(self.out / "checkpoints" / "best.pt", payload)

    def summary(self) -> dict[str, Any]:
        return {"updates": self.updates, "env_steps": self.env_steps, "recent_return": self.recent_mean,
                "wall_s": self.wall_s}
