"""Every configuration key of PowerNet, with its type, default and help text, in one place.

A run is described by a TOML file (stdlib `tomllib`) with the sections `env`, `model`, `train` and `dist`,
then `--set section.key=value` overrides. Everything goes through the same validation, so a misspelt key or a
value of the wrong type stops the run with an `InputError` that names the key, before any work starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from common.algorithms import ALGORITHMS
from common.errors import InputError
from common.tomlfile import read_toml

OFF = "off"
# Keys of older run files that now come from the system file (episode length, control interval). A config
# file that still has them is read without them: the runs that wrote them had them checked against the system.
RETIRED_KEYS = {"env": ("episode_steps", "control_dt_s")}


def _opt(default: Any, help: str, *, choices: tuple[Any, ...] | None = None, low: float | None = None,
         high: float | None = None, off_ok: bool = False) -> Any:
    """A schema field: default plus the facts validation needs (choices, bounds, whether "off" is allowed)."""
    meta = {"help": help, "choices": choices, "low": low, "high": high, "off_ok": off_ok}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class EnvConfig:
    system: str = _opt("microgrid-6", "the grid and its agent graph: a shipped system's name (simsvc/systems/"
                       "NAME.toml: microgrid-6, microgrid-20, ...) or the path of a system TOML file")
    disturbance: str = _opt("walk", "load disturbance in training episodes: none, episode (factors drawn at "
                            "reset) or walk (episode factors plus a random walk every control step)",
                            choices=("none", "episode", "walk"))
    noise_std: float = _opt(0.0, "Gaussian observation noise, as a fraction of the normalised value", low=0.0)
    smoothing_beta: float = _opt(0.0, "action smoothing beta: applied Vn = beta*Vn_prev + (1-beta)*Vn_new",
                                 low=0.0, high=0.999999)
    scenario: str = _opt("classic", "what episodes throw at the agents and reward them for: a shipped scenario's "
                         "name (configs/scenarios/NAME.toml: classic, paper, stress, sharing, loadbus, delayed) or "
                         "the path of a scenario TOML file (docs/scenarios.md)")
    obs_norm: str = _opt("system", "observation scale: system (the system file's droop statistics) or scenario "
                         "(droop statistics of the training scenario's own episodes; docs/scenarios.md#observation-"
                         "scale)", choices=("system", "scenario"))
    obs_norm_scenario: str = _opt("", "with obs_norm = scenario, the scenario whose statistics scale the "
                                  "observations; empty: env.scenario. Evaluation on another scenario sets it to the "
                                  "training scenario, so that a policy keeps the input scale it learned with")


@dataclass(frozen=True)
class ModelConfig:
    algorithm: str = _opt("powernet", "network and training recipe: " + ", ".join(ALGORITHMS),
                          choices=ALGORITHMS)
    hidden: int = _opt(64, "hidden width H of every layer and of the LSTM", low=1)
    share_weights: bool = _opt(False, "one set of weights for all agents (an agent-id one-hot joins the input)")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = _opt(1_000_000, "environment steps to train for (one env advancing one control step = 1)",
                      low=1)
    n_steps: int = _opt(20, "rollout window length n of the n-step returns (20 = one episode)", low=1)
    gamma: float = _opt(0.99, "discount factor", low=0.0, high=1.0)
    gae_lambda: Any = _opt(OFF, "GAE lambda in [0, 1], or \"off\" for plain n-step returns", low=0.0,
                           high=1.0, off_ok=True)
    lr: float = _opt(5e-4, "learning rate", low=0.0)
    optimizer: str = _opt("rmsprop", "rmsprop or adam", choices=("rmsprop", "adam"))
    rmsprop_alpha: float = _opt(0.99, "RMSprop smoothing constant", low=0.0, high=1.0)
    optim_eps: float = _opt(1e-5, "epsilon of RMSprop / Adam", low=0.0)
    fused_adam: bool = _opt(True, "Adam runs as torch's fused kernel (one pass over each tensor; the same "
                            "update up to float rounding, about 10x faster per step on CPU); false: the "
                            "per-operation kernel, which runs made before this key existed used")
    unroll: str = _opt("kernel", "how the learner recomputes a window: kernel (the step-by-step part compiled, "
                       "forward and backward, for every network but CommNet and DIAL, on CPU; about 2x faster "
                       "per update) or torch (autograd over per-step operations, which runs made before this "
                       "key existed used); the two agree to float32 rounding", choices=("kernel", "torch"))
    lr_schedule: str = _opt("constant", "constant, or linear decay to 0 at train.steps",
                            choices=("constant", "linear"))
    max_grad_norm: float = _opt(40.0, "global gradient-norm clip over all agents (0 disables)", low=0.0)
    skip_grad_norm: float = _opt(1e6, "skip an update (no optimiser step, parameters and optimiser state kept) "
                                 "whose loss is NaN/inf or whose gradient norm before clipping is NaN/inf or "
                                 "above this; healthy updates stay far below (0: skip only NaN/inf)", low=0.0)
    max_skipped_updates: int = _opt(10, "stop the run with an error after this many skipped updates in a row",
                                    low=1)
    value_coef: float = _opt(0.5, "value-loss coefficient c_v", low=0.0)
    entropy_coef: float = _opt(0.01, "entropy-bonus coefficient c_e", low=0.0)
    entropy_schedule: str = _opt("constant", "constant, or linear decay of entropy_coef to 0 at train.steps",
                                 choices=("constant", "linear"))
    reward_norm: float = _opt(2.5, "rewards are divided by this before learning", low=1e-12)
    reward_clip: Any = _opt(OFF, "clip learning rewards to [-c, c] after scaling, or \"off\"", low=0.0,
                            off_ok=True)
    spatial_discount: float = _opt(0.9, "alpha: agent i learns from sum_j alpha^d(i,j) r_j (0 own, 1 global)",
                                   low=0.0, high=1.0)
    loss: str = _opt("a2c", "a2c (one step per batch) or ppo (clipped surrogate, several epochs)",
                     choices=("a2c", "ppo"))
    ppo_clip: float = _opt(0.2, "PPO ratio clip epsilon", low=0.0)
    ppo_epochs: int = _opt(4, "PPO epochs over each batch", low=1)
    advantage_norm: bool = _opt(False, "normalise each batch's advantages to mean 0 and standard deviation 1 "
                                "(over all steps, envs and agents) before the policy loss")
    loss_reduction: str = _opt("sum", "combine per-agent losses by sum (as the original) or mean",
                               choices=("sum", "mean"))
    seed: int = _opt(0, "seed of torch, numpy and the training episodes", low=0)
    num_envs: int = _opt(1, "environments stepped together by the local trainer (one batch per update)",
                         low=1)
    env_groups: int = _opt(1, "local trainer: split train.num_envs into this many groups seeded like sync "
                           "mode's actors (set it to dist.actors to reproduce a sync run exactly)", low=1)
    device: str = _opt("cpu", "device of the learner's update: cpu or cuda", choices=("cpu", "cuda"))
    threads: int = _opt(1, "local trainer: torch CPU threads of the update (the distributed services use one "
                        "each); more than one pays only for large systems on an otherwise idle machine", low=1)
    init_from: str = _opt("", "start a fresh run from the weights of this checkpoint (a .pt file, or a run "
                          "directory: its checkpoints/latest.pt), same algorithm and system; the optimiser, "
                          "counters and schedules start fresh (\"\": random initial weights)")
    checkpoint_every: int = _opt(50_000, "environment steps between checkpoints (one is also written at the "
                                 "end)", low=1)
    log_every: int = _opt(50, "updates between progress lines in the log", low=1)
    eval_every: int = _opt(0, "local trainer: evaluate the greedy policy every this many env steps on the "
                           "evaluation seeds and append it to eval_curve.csv (0: never)", low=0)
    eval_episodes: int = _opt(20, "episodes of each evaluation during training (seeds eval_seed, +25, ...)", low=1)
    eval_seed: int = _opt(2000, "first seed of the evaluations during training (2000: the protocol's)", low=0)
    vtrace_rho_clip: float = _opt(1.0, "async mode: V-trace clip rho-bar of the importance weights in the "
                                  "targets and policy gradient", low=0.0)
    vtrace_c_clip: float = _opt(1.0, "async mode: V-trace clip c-bar of the trace-cutting weights", low=0.0)


@dataclass(frozen=True)
class DistConfig:
    actors: int = _opt(1, "actor processes", low=1)
    envs_per_actor: int = _opt(1, "environments stepped together by each actor", low=1)
    mode: str = _opt("sync", "sync (exact on-policy) or async (bounded policy lag, V-trace correction)",
                     choices=("sync", "async"))
    host: str = _opt("127.0.0.1", "interface the learner binds to")
    rollout_port: int = _opt(5555, "learner's PULL port for rollouts", low=1, high=65535)
    weights_port: int = _opt(5556, "learner's PUB port for weights", low=1, high=65535)
    control_port: int = _opt(5557, "learner's ROUTER port for control messages", low=1, high=65535)
    max_policy_lag: int = _opt(2, "async mode: oldest weight version (in updates) a rollout may come from",
                               low=0)
    batch_rollouts: int = _opt(0, "async mode: rollouts per update, whichever actors sent them (0 = "
                               "dist.actors)", low=0)
    learner_delay_s: float = _opt(0.0, "testing aid: the learner sleeps this long before every update, "
                                  "emulating a slow learner (async lag then grows)", low=0.0)
    actor_hang_s: float = _opt(60.0, "supervisor: restart an actor the learner has not heard from (no rollout, "
                               "no heartbeat) for this many seconds while its process lives (0: never)", low=0.0)


@dataclass(frozen=True)
class Config:
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dist: DistConfig = field(default_factory=DistConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict, the shape of the TOML file."""
        return {name: dataclasses.asdict(getattr(self, name)) for name in _SECTIONS}


_SECTIONS: dict[str, type] = {"env": EnvConfig, "model": ModelConfig, "train": TrainConfig, "dist": DistConfig}


def describe() -> list[tuple[str, Any, str]]:
    """(key, default, help) for every key: what `--help` texts and docs are generated from."""
    rows = []
    for name, cls in _SECTIONS.items():
        for f in dataclasses.fields(cls):
            rows.append((f"{name}.{f.name}", f.default, f.metadata["help"]))
    return rows


def _check_value(key: str, f: dataclasses.Field, value: Any) -> Any:
    meta = f.metadata
    kind = type(f.default)
    if meta["off_ok"] and value == OFF:
        return OFF
    if meta["off_ok"] or kind is float:
        allowed, what = (int, float), "a number" + ' or "off"' * meta["off_ok"]
    else:
        allowed, what = (kind,), {bool: "true or false", int: "an integer", str: "a string"}[kind]
    if not isinstance(value, allowed) or (isinstance(value, bool) and kind is not bool):
        raise InputError(f"config key {key}: expected {what}, got {value!r}")
    if float in allowed:
        value = float(value)
        if not math.isfinite(value):
            raise InputError(f"config key {key}: expected a finite number, got {value!r}")
    if meta["choices"] is not None and value not in meta["choices"]:
        raise InputError(f"config key {key}: {value!r} is not one of {', '.join(map(str, meta['choices']))}")
    if kind is not bool and isinstance(value, int | float):
        if meta["low"] is not None and value < meta["low"]:
            raise InputError(f"config key {key}: {value!r} is below the minimum {meta['low']}")
        if meta["high"] is not None and value > meta["high"]:
            raise InputError(f"config key {key}: {value!r} is above the maximum {meta['high']}")
    return value


def from_dict(data: Mapping[str, Any]) -> Config:
    """Validate a nested mapping (missing keys take defaults) and build the Config."""
    sections = {}
    for name, section in data.items():
        if name not in _SECTIONS:
            raise InputError(f"unknown config section {name!r} (known: {', '.join(_SECTIONS)})")
        if not isinstance(section, Mapping):
            raise InputError(f"config section {name!r} must be a table")
        fields = {f.name: f for f in dataclasses.fields(_SECTIONS[name])}
        values = {}
        for key, value in section.items():
            if key not in fields:
                raise InputError(f"unknown config key {name}.{key}")
            values[key] = _check_value(f"{name}.{key}", fields[key], value)
        sections[name] = _SECTIONS[name](**values)
    return Config(**sections)


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split `section.key=value`; the value is read as a TOML value, else taken as a bare string."""
    if "=" not in text:
        raise InputError(f"--set {text!r}: expected section.key=value")
    path, raw = (s.strip() for s in text.split("=", 1))
    if path.count(".") != 1:
        raise InputError(f"--set {text!r}: the key must be section.key, e.g. train.lr")
    section, key = path.split(".")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return section, key, value


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Read a TOML config (or start from defaults), apply `--set` overrides, validate everything."""
    data: dict[str, dict[str, Any]] = {}
    if path is not None:
        data = read_toml(path, "config file")
    data = {k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}
    for section, keys in RETIRED_KEYS.items():
        for key in keys:
            if isinstance(data.get(section), dict):
                data[section].pop(key, None)
    for text in overrides:
        section, key, value = parse_override(text)
        if section not in _SECTIONS:
            raise InputError(f"--set {text!r}: unknown config section {section!r}")
        data.setdefault(section, {})[key] = value
    return from_dict(data)


def replace(cfg: Config, **sections: Mapping[str, Any]) -> Config:
    """A copy of cfg with some keys changed, validated like a file: replace(cfg, train={"steps": 40})."""
    data = cfg.to_dict()
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return from_dict(data)


def dumps(cfg: Config, header: str = "") -> str:
    """The resolved config as TOML text (loadable by `load_config`); `header` lines become comments."""
    import tomli_w

    comments = "".join(f"# {line}\n" for line in header.splitlines())
    return comments + tomli_w.dumps(cfg.to_dict())


def gae_lambda(cfg: TrainConfig) -> float | None:
    """train.gae_lambda as a number, or None for plain n-step returns."""
    return None if cfg.gae_lambda == OFF else float(cfg.gae_lambda)


def reward_clip(cfg: TrainConfig) -> float | None:
    """train.reward_clip as a number, or None when clipping is off."""
    return None if cfg.reward_clip == OFF else float(cfg.reward_clip)


def config_digest(cfg: Config) -> str:
    """A short digest of what learner and actors must agree on (the env, the model, the training recipe and
    the rollout layout); an actor refuses a learner whose digest differs from its own."""
    data = {k: v for k, v in cfg.to_dict().items() if k in ("env", "model", "train")}
    if data["env"]["scenario"] == "classic":  # the default, which older versions did not name: same digest
        del data["env"]["scenario"]
    local_only = ("steps", "device", "log_every", "threads", "eval_every", "eval_episodes", "eval_seed")
    data["train"] = {k: v for k, v in data["train"].items() if k not in local_only}
    data["dist"] = {"envs_per_actor": cfg.dist.envs_per_actor, "mode": cfg.dist.mode}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
