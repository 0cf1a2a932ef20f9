"""PGSim as a multi-agent environment: one agent per DG, secondary voltage set-points as actions (docs/mdp.md).

`VecMicrogridEnv` steps E copies of a system in one call (one Numba call per control step for all of
them) and resets each copy automatically when its episode ends; `MicrogridEnv` is the single-copy view.
With ``defer_reset=True`` the automatic reset waits: a step that ends episodes returns their final
observations, and `finish_resets()` later runs the new episodes' warm-up and returns their first
observations. The episodes are bit-identical either way; deferring lets a caller run the warm-up (which
needs no actions) while something else happens, e.g. while a learner updates on the rollout just sent.
Observations are per-unit-free normalised measurements, rewards the raw per-agent rewards
(docs/mdp.md#rewards): spatial mixing and reward scaling belong to the learner.

A scenario (`simsvc.scenarios`, docs/scenarios.md) sets the load draws, the walk, load steps, what the DGs'
measurements suffer (noise, delay) and the reward's extra terms; the default, `classic`, is the environment
as it always was, bit for bit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from common.errors import InputError
from common.graph import hop_distances
from simsvc.links import LinkLoss
from simsvc.metrics import outside_band
from simsvc.reward import DIVERGED_REWARD, neighbour_mean_matrix
from simsvc.scenario_effects import apply_load_factors, fault_set, loadbus_assignment, scenario_rewards
from simsvc.scenarios import Scenario, load_scenario
from simsvc.simulator import GridBatch, Measurements, stack_trace
from simsvc.systems import DG_COL, OBS_NAMES, System, load_system, setpoint_choices

DISTURBANCES = ("none", "episode", "walk")
ACTION_MODES = ("discrete", "continuous")
OBS_DIM = len(OBS_NAMES)
LOAD_FACTOR_RANGE = (0.8, 1.2)  # the `classic` scenario's values (configs/scenarios/classic.toml)
LOAD_WALK_STEP = 0.05
LOAD_FACTOR_CLIP = (0.5, 1.5)
NOISE_STREAM = 1  # spawn key of the measurement-noise generator, apart from the load generator of a seed
FAULT_FILL = 0.0  # what a failed sensor's DG observes in every normalised channel (docs/scenarios.md)
MEASUREMENT_FIELDS = tuple(f.name for f in dataclasses.fields(Measurements))


class VecMicrogridEnv:
    """E microgrid environments of one system stepped together, with automatic reset."""

    def __init__(self, system: str | System = "microgrid-6", num_envs: int = 1, *, disturbance: str = "walk",
                 noise_std: float = 0.0, smoothing_beta: float = 0.0, action_mode: str = "discrete",
                 dg_model: str | None = None, dt_s: float | None = None, episode_steps: int | None = None,
                 control_dt_s: float | None = None, trace_dt_s: float | None = None, auto_reset: bool = True,
                 defer_reset: bool = False, scenario: str | Scenario | None = None,
                 obs_norm: str | Scenario = "system"):
        self.system = system if isinstance(system, System) else load_system(system)
        s = self.system
        if not s.has_episode:
            raise InputError(f"system '{s.name}' has no [episode] section; run it with `powernet sim --duration`")
        if disturbance not in DISTURBANCES:
            raise InputError(f"disturbance must be one of {', '.join(DISTURBANCES)}, got {disturbance!r}")
        if action_mode not in ACTION_MODES:
            raise InputError(f"action_mode must be one of {', '.join(ACTION_MODES)}, got {action_mode!r}")
        if not 0.0 <= smoothing_beta < 1.0:
            raise InputError(f"smoothing_beta must be in [0, 1), got {smoothing_beta}")
        if noise_std < 0.0:
            raise InputError(f"noise_std must be >= 0, got {noise_std}")
        self.grid = GridBatch(s, num_envs, dg_model=dg_model, dt_s=dt_s)
        self.n_envs = num_envs
        self.n_agents = s.n_dg
        self.obs_dim = OBS_DIM
        self.n_actions = s.n_actions
        self.episode_steps = int(episode_steps or s.episode_steps)
        self.control_dt_s = float(control_dt_s or s.control_dt_s)
        self.disturbance = disturbance
        self.noise_std = float(noise_std)
        self.smoothing_beta = float(smoothing_beta)
        self.action_mode = action_mode
        self.auto_reset = auto_reset
        self.defer_reset = bool(defer_reset) and auto_reset  # deferral is a kind of auto-reset
        self.adjacency = s.agent_adjacency.copy()
        self.neighbors = [np.flatnonzero(row).astype(np.int64) for row in self.adjacency]
        self.hop_distance = hop_distances(self.adjacency)
        self._warmup_steps = self.grid.steps_for(s.warmup_s) if s.warmup_s else 0
        self._control_steps = self.grid.steps_for(self.control_dt_s)
        self._trace_every = None if trace_dt_s is None else self._trace_stride(trace_dt_s)
        self.scenario = sc = load_scenario(scenario)
        self.delay = sc.delay_steps
        if self.delay * self._control_steps > self._warmup_steps:
            raise InputError(f"scenario {sc.name!r}: a delay of {self.delay} control steps needs a warm-up of at "
                             f"least that long (system '{s.name}' warms up {s.warmup_s} s)")
        self._n_q = s.dg_params[:, DG_COL["n_q"]]
        from simsvc.obs_stats import observation_scale  # (it builds envs itself)

        self.obs_mean, self.obs_std = observation_scale(s, obs_norm)  # "system" or a scenario
        self._share_mix = neighbour_mean_matrix(self.adjacency) if sc.sharing_weight > 0 else None
        self.loadbus_assign = loadbus_assignment(s, sc.loadbus_nearest) if sc.loadbus_weight > 0 else None
        self._all_envs = np.arange(num_envs)
        self._choices = setpoint_choices(s)  # the discrete actions' set-points (V)
        self._rl = np.ones((num_envs, 2, s.n_load))  # the R and L factor of every load, now
        self.measured_load_factors = self._rl.copy()  # ... and at the latest measurement (before a walk or step)
        self._step_at = np.full(num_envs, -1, dtype=np.int64)  # control step a load step acts from (-1: none)
        self._step_delta = np.zeros((num_envs, 2, s.n_load))
        self._obs_hist = np.zeros((num_envs, self.delay, s.n_dg, OBS_DIM), dtype=np.float32)
        self._meas_hist: list[Measurements | None] = [None] * self.delay
        self._measured: Measurements | None = None
        self._first_seeds: np.ndarray | None = None
        self.n_faults = sc.fault_count(s.n_dg)
        self.sensor_fault = np.zeros((num_envs, s.n_dg), dtype=np.bool_)  # DGs without a measurement this episode
        self._link_loss = LinkLoss(self.adjacency, sc.message_loss, num_envs) if sc.message_loss > 0 else None

        self._base_seed = 0
        self._episode_index = np.zeros(num_envs, dtype=np.int64)
        self._rngs: list[np.random.Generator] = [np.random.default_rng(0) for _ in range(num_envs)]
        # Measurement noise has its own stream per episode so that turning it on leaves the physics
        # (load draws and the load walk) of a seed unchanged.
        self._noise_rngs: list[np.random.Generator] = [np.random.default_rng(0) for _ in range(num_envs)]
        self._t = np.zeros(num_envs, dtype=np.int64)
        self._return = np.zeros(num_envs)
        self._finished = np.zeros(num_envs, dtype=np.bool_)
        self._reset_pending = np.zeros(num_envs, dtype=np.bool_)  # defer_reset: ended, warm-up not yet run
        self._last_obs: np.ndarray | None = None  # defer_reset: the observations last returned
        self._traces: list[list[tuple]] = [[] for _ in range(num_envs)]
        self.episode_seed = np.zeros(num_envs, dtype=np.int64)
        self._needs_reset = True

    # -- episodes -------------------------------------------------------------------------------------
    def reset(self, seed: int = 0, *, episode_seeds: Any = None) -> np.ndarray:
        """Start every environment; env e runs episodes with seeds seed+e, seed+e+E, seed+e+2E, ...
        `episode_seeds` ([E] integers) gives the first episode of each env its seed instead (searches that
        score many candidates on the same seeds use it); later episodes follow the rule above."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self._first_seeds = None
        if episode_seeds is not None:
            first = np.asarray(episode_seeds)
            if first.shape != (self.n_envs,) or not np.issubdtype(first.dtype, np.integer):
                raise ValueError(f"episode_seeds must be {self.n_envs} integers, got {episode_seeds!r}")
            self._first_seeds = first.astype(np.int64)
        self._base_seed = int(seed)
        self._episode_index[:] = 0
        self._reset_pending[:] = False
        self._start_episodes(np.arange(self.n_envs))
        self._needs_reset = False
        obs = self._observed(self.grid.measure())
        self._draw_links(np.arange(self.n_envs))
        self._last_obs = obs.copy() if self.defer_reset else None
        return obs

    def _start_episodes(self, envs: np.ndarray) -> None:
        """Draw loads, start from rest, and run the warm-up with V_n = V_nom for the given envs."""
        s = self.system
        for e in envs:
            seed = self._base_seed + int(e) + self.n_envs * int(self._episode_index[e])
            if self._first_seeds is not None and self._episode_index[e] == 0:
                seed = int(self._first_seeds[e])
            self.episode_seed[e] = seed
            self._rngs[e] = np.random.default_rng(seed)
            self._noise_rngs[e] = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(NOISE_STREAM,)))
            if self.n_faults:
                self.sensor_fault[e] = fault_set(seed, s.n_dg, self.n_faults)
            if self._link_loss is not None:
                self._link_loss.start(e, seed)
        sc = self.scenario
        factors = np.ones((len(envs), 2, s.n_load))  # R, L
        self._step_at[envs] = -1
        if self.disturbance != "none":
            for k, e in enumerate(envs):
                rng = self._rngs[e]
                factors[k, 0] = rng.uniform(*sc.factor_range, size=s.n_load)
                factors[k, 1] = rng.uniform(*sc.factor_range, size=s.n_load) if sc.independent_rl else factors[k, 0]
                if sc.load_steps:
                    self._step_at[e] = rng.integers(sc.step_window[0], sc.step_window[1] + 1)
                    delta = rng.uniform(*sc.step_size, size=(2 if sc.independent_rl else 1, s.n_load))
                    self._step_delta[e] = delta
        self._set_loads(factors, envs)
        self.measured_load_factors[envs] = factors
        self.grid.reset_state(envs)
        self._t[envs] = 0
        self._return[envs] = 0.0
        self._finished[envs] = False
        for e in envs:
            self._traces[e] = []
        if self.delay == 0:
            self._run(self._warmup_steps, envs)
            return
        # Delayed measurements: the last `delay` control intervals of the warm-up fill the queue, so the first
        # observation is the measurement taken `delay` control steps before the warm-up ends.
        self._run(self._warmup_steps - self.delay * self._control_steps, envs)
        for _ in range(self.delay):
            self._observed(self.grid.measure(), envs)
            self._run(self._control_steps, envs)

    def _set_loads(self, factors: np.ndarray, envs: np.ndarray) -> None:
        rows = None if len(envs) == self.n_envs and np.array_equal(envs, self._all_envs) else envs
        self._rl[slice(None) if rows is None else rows] = factors
        if self.scenario.independent_rl:
            apply_load_factors(self.grid, factors, rows)
        else:  # R and L share their factors: what apply_load_factors would find, without comparing
            self.grid.set_load_factors(factors[:, 1], rows)

    @property
    def links(self) -> np.ndarray | None:
        """Which neighbour messages reach each agent with the current observation: [E, N, D] bool (slot s =
        the s-th neighbour in ascending order, True = received; padding False), or None without message loss
        (simsvc/links.py)."""
        return None if self._link_loss is None else self._link_loss.mask.copy()

    def _draw_links(self, envs: np.ndarray) -> None:
        if self._link_loss is not None:
            self._link_loss.draw(envs)

    @property
    def resets_pending(self) -> bool:
        """True when deferred auto-resets wait for `finish_resets()` (only with defer_reset)."""
        return bool(self._reset_pending.any())

    def finish_resets(self) -> np.ndarray:
        """Start the episodes that deferred auto-resets left pending (load draws and warm-up, exactly as an
        immediate auto-reset would) and return the observations of every env [E, N, 9]: the new episode's
        first observation where one started, the last step's observation elsewhere."""
        if self._needs_reset:
            raise RuntimeError("call reset(seed) first")
        if not self.defer_reset:
            raise RuntimeError("finish_resets() needs an environment constructed with defer_reset=True")
        envs = np.flatnonzero(self._reset_pending)
        obs = self._last_obs.copy()
        if envs.size:
            self._start_episodes(envs)
            obs[envs] = self._observed(self.grid.measure(), envs)[envs]
            self._draw_links(envs)
            self._reset_pending[envs] = False
            self._last_obs = obs.copy()
        return obs

    def _run(self, n_steps: int, envs: np.ndarray) -> None:
        """Integrate n_steps for the given envs (others stay put), recording traces when asked."""
        if n_steps == 0:
            return
        envs = None if len(envs) == self.n_envs else envs
        if self._trace_every is None:
            self.grid.advance(n_steps, envs)
            return
        rows = np.arange(self.n_envs) if envs is None else envs
        fresh = rows[self.grid.t_s[rows] == 0.0]
        if fresh.size:
            self._record(fresh)
        for n in self._chunks(n_steps):
            self.grid.advance(n, envs)
            self._record(rows)

    # -- acting ---------------------------------------------------------------------------------------
    def actions_to_setpoints(self, actions: Any) -> np.ndarray:
        """Validate agent actions [E, N] and map them to commanded set-points (V)."""
        s = self.system
        a = np.asarray(actions)
        if a.shape != (self.n_envs, self.n_agents):
            raise ValueError(f"actions must have shape ({self.n_envs}, {self.n_agents}), got {a.shape}")
        integral = np.issubdtype(a.dtype, np.integer)
        if not (integral or np.issubdtype(a.dtype, np.floating)):
            raise ValueError(f"actions must be numbers, got dtype {a.dtype}")
        if not integral and not np.all(np.isfinite(a)):
            raise ValueError("actions contain NaN or inf")
        if self.action_mode == "discrete":
            if (not integral and np.any(a != np.round(a))) or a.min() < 0 or a.max() >= self.n_actions:
                raise ValueError(f"discrete actions must be integers in 0..{self.n_actions - 1}, got {a.tolist()}")
            return self._choices[a.astype(np.int64)]
        if np.any(a < -1.0) or np.any(a > 1.0):
            raise ValueError(f"continuous actions must lie in [-1, 1], got {a.tolist()}")
        return s.setpoint_min_v + (a.astype(np.float64) + 1.0) * 0.5 * (s.setpoint_max_v - s.setpoint_min_v)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Apply agent actions (smoothed by β) for one control step; see the module docstring."""
        self._check_steppable()
        vn_cmd = self.actions_to_setpoints(actions)
        beta = self.smoothing_beta
        vn = beta * self.grid.vn_v + (1.0 - beta) * vn_cmd if beta > 0.0 else vn_cmd
        return self._hold(vn)  # set-points of valid actions are valid

    def step_setpoints(self, vn_v: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Hold the given set-points (V, [E, N]) for one control step: the entry point of controllers."""
        self._check_steppable()
        vn_v = np.asarray(vn_v, dtype=np.float64)
        if vn_v.shape != (self.n_envs, self.n_agents) or not np.all(np.isfinite(vn_v)) or np.any(vn_v <= 0):
            raise ValueError(f"set-points must be finite positive volts of shape ({self.n_envs}, {self.n_agents})")
        return self._hold(vn_v)

    def _hold(self, vn_v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """`step_setpoints` after its checks: vn_v is a finite positive float64 [E, N]."""
        grid = self.grid
        grid.vn_v[:] = vn_v
        ok_before = grid.ok.copy()
        self._run(self._control_steps, self._all_envs)
        diverged = ok_before & ~grid.ok
        meas = self.grid.measure()
        obs = self._observed(meas)
        self._draw_links(self._all_envs)
        rewards, extra = self._reward(meas)
        rewards[diverged] = DIVERGED_REWARD
        rewards = np.where(np.isfinite(rewards), rewards, DIVERGED_REWARD)
        self._t += 1
        self._return += rewards.sum(axis=1)
        done = (self._t >= self.episode_steps) | diverged
        info: dict[str, Any] = {
            "v_pu": meas.v_pu, "f_hz": meas.f_hz, "p_w": meas.p_w, "q_var": meas.q_var,
            "vn_v": vn_v.copy(), "violations": outside_band(meas.v_pu).sum(axis=1).astype(np.int64),
            "diverged": diverged, "episode_return": self._return.copy(), "episode_seed": self.episode_seed.copy(),
            "step": self._t.copy(), "load_factor": grid.load_factor.copy(), **extra,
        }
        if self.n_faults:
            info["sensor_fault"] = self.sensor_fault.copy()
        sc = self.scenario
        if sc.independent_rl:
            info["load_factor_rl"] = self._rl.copy()
        self.measured_load_factors = self._rl.copy()
        if self.disturbance == "walk" or (sc.load_steps and self.disturbance != "none"):
            self._move_loads(np.flatnonzero(~done))
        if self.defer_reset:
            self._last_obs = obs.copy()
        finished = np.flatnonzero(done)
        if finished.size:
            info["final_obs"] = obs.copy()
            if not self.auto_reset:
                self._finished[finished] = True
                return obs, rewards.astype(np.float32), done, info
            self._episode_index[finished] += 1
            if self.defer_reset:  # finish_resets() starts them; until then step() refuses
                self._reset_pending[finished] = True
                return obs, rewards.astype(np.float32), done, info
            self._start_episodes(finished)
            obs[finished] = self._observed(self.grid.measure(), finished)[finished]
            self._draw_links(finished)
        return obs, rewards.astype(np.float32), done, info

    def _check_steppable(self) -> None:
        if self._needs_reset or self._finished.any():
            raise RuntimeError("call reset(seed) before step(): an episode has ended and auto_reset is off")
        if self._reset_pending.any():
            raise RuntimeError("deferred resets are pending: call finish_resets() (and act on the observations "
                               "it returns) before step()")

    def _move_loads(self, envs: np.ndarray) -> None:
        """After a control step, for the envs whose episode goes on: the walk (with the `walk` disturbance,
        every factor takes a U(−step, step) step; classic: U(−0.05, 0.05)) and the scenario's load step when
        the next control step is the one it acts from; then the factors are clipped to the walk's bounds
        (classic: [0.5, 1.5])."""
        if envs.size == 0:
            return
        sc, n_load = self.scenario, self.system.n_load
        walk = self.disturbance == "walk"
        factors = self._rl[envs].copy()
        moved = np.zeros(len(envs), dtype=np.bool_)
        for k, e in enumerate(envs):
            if walk:
                if sc.independent_rl:
                    factors[k] += self._rngs[e].uniform(-sc.walk_step, sc.walk_step, size=(2, n_load))
                else:
                    factors[k, 1] += self._rngs[e].uniform(-sc.walk_step, sc.walk_step, size=n_load)
                    factors[k, 0] = factors[k, 1]
                moved[k] = True
            if self._step_at[e] >= 0 and self._t[e] == self._step_at[e]:
                factors[k] += self._step_delta[e]
                moved[k] = True
        if moved.all():  # (the rule with the walk on: no fancy indexing)
            self._set_loads(np.clip(factors, *sc.walk_bounds), envs)
        elif moved.any():
            self._set_loads(np.clip(factors[moved], *sc.walk_bounds), envs[moved])

    def _reward(self, meas: Measurements) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return scenario_rewards(self.grid, meas, self.scenario, self._share_mix, self.loadbus_assign)

    # -- observations ---------------------------------------------------------------------------------
    def measure(self) -> Measurements:
        """The true measurements of every DG now (SI and p.u.), without the scenario's noise or delay."""
        return self.grid.measure()

    def measured(self) -> Measurements:
        """What the DGs have at hand for their next decision: the measurement behind the latest observation,
        with the scenario's sensor noise and delay (docs/scenarios.md#measurements). In `classic` this is the
        true measurement at the end of the latest step (or warm-up). A conventional controller decides from it."""
        if self._measured is None:
            raise RuntimeError("call reset(seed) first")
        return self._measured

    def _observed(self, meas: Measurements, envs: np.ndarray | None = None) -> np.ndarray:
        """The observations the agents receive now [E, N, 9], for `envs` (all by default; other rows are
        not meaningful): the measurement with the scenario's SI noise, normalised (and with env.noise_std),
        delayed by the scenario's delay. Keeps what the DGs measured for `measured()`."""
        rows = np.arange(self.n_envs) if envs is None else np.asarray(envs)
        if self.scenario.noise_rel > 0.0:
            meas = self._sensor_noise(meas, rows)
        obs = self._observe(meas, envs)
        if self.delay:
            out, meas = obs.copy(), self._delay(obs, meas, rows)
            out[rows] = self._delivered_obs[rows]
            obs = out
        if self.n_faults:
            obs, meas = self._faulted(obs, meas, rows)
        if self._measured is None or envs is None:
            self._measured = _copy_measurements(meas)  # info of the step shares meas's arrays: keep them apart
        else:
            for name in MEASUREMENT_FIELDS:
                getattr(self._measured, name)[rows] = getattr(meas, name)[rows]
        return obs

    def _faulted(self, obs: np.ndarray, meas: Measurements, rows: np.ndarray) -> tuple[np.ndarray, Measurements]:
        """The observation and measurement of `rows` with the failed sensors of this episode: a failed DG
        observes FAULT_FILL in every channel and its measurement reads NaN (no reading) in every field."""
        mask = np.zeros_like(self.sensor_fault)
        mask[rows] = self.sensor_fault[rows]
        obs = obs.copy()
        obs[mask] = FAULT_FILL
        meas = _copy_measurements(meas)
        for f in dataclasses.fields(Measurements):
            getattr(meas, f.name)[mask] = np.nan
        return obs, meas

    def _delay(self, obs: np.ndarray, meas: Measurements, rows: np.ndarray) -> Measurements:
        """Push the fresh observation and measurement of `rows` into the delay queues and take out the oldest
        (`_delivered_obs` and the returned Measurements)."""
        self._delivered_obs = self._obs_hist[:, 0].copy()
        oldest = self._meas_hist[0] or meas
        delivered = _copy_measurements(oldest)
        self._obs_hist[rows, :-1] = self._obs_hist[rows, 1:]
        self._obs_hist[rows, -1] = obs[rows]
        for k in range(self.delay):
            newer = meas if k == self.delay - 1 else (self._meas_hist[k + 1] or meas)
            if self._meas_hist[k] is None:
                self._meas_hist[k] = _copy_measurements(meas)
            for f in dataclasses.fields(Measurements):
                getattr(self._meas_hist[k], f.name)[rows] = getattr(newer, f.name)[rows]
        return delivered

    def _sensor_noise(self, meas: Measurements, rows: np.ndarray) -> Measurements:
        """The measurement with every observed channel multiplied by (1 + σ·ξ), ξ ~ N(0, 1) from each env's
        noise stream (rows only), σ = the scenario's noise_rel; the DG voltage follows from the noisy Q (reduced
        model: (V_n − n_Q·Q)/V_nom), or takes the same relative noise (full model)."""
        raw = self.raw_observation(meas)
        factor = np.ones((self.n_envs, self.n_agents, OBS_DIM + 1))
        for e in rows:
            factor[e] += self.scenario.noise_rel * self._noise_rngs[e].standard_normal((self.n_agents, OBS_DIM + 1))
        raw = raw * factor[..., :OBS_DIM]
        q = raw[..., 2]
        if self.grid.dg_model == "reduced":
            v_pu = (self.grid.vn_v - self._n_q * q) / self.system.v_nom_v
        else:
            v_pu = meas.v_pu * factor[..., OBS_DIM]
        return Measurements(v_pu=v_pu, f_hz=meas.f_hz.copy(), p_w=raw[..., 1].copy(), q_var=q.copy(),
                            delta_rad=raw[..., 0].copy(), io_dq_a=raw[..., 3:5].copy(),
                            io_DQ_a=raw[..., 5:7].copy(), vb_DQ_v=raw[..., 7:9].copy())

    def raw_observation(self, meas: Measurements) -> np.ndarray:
        """The 9 measurements of every agent in SI units, [E, N, 9] (order: OBS_NAMES)."""
        raw = np.empty((*meas.v_pu.shape, OBS_DIM))
        raw[..., 0], raw[..., 1], raw[..., 2] = meas.delta_rad, meas.p_w, meas.q_var
        raw[..., 3:5], raw[..., 5:7], raw[..., 7:9] = meas.io_dq_a, meas.io_DQ_a, meas.vb_DQ_v
        return raw

    def _observe(self, meas: Measurements, envs: np.ndarray | None = None) -> np.ndarray:
        """Normalised (noisy) observations [E, N, 9]; noise is drawn only for `envs` (all by default), so
        an env that restarts alone does not advance the noise stream of the others."""
        obs = (self.raw_observation(meas) - self.obs_mean) / self.obs_std  # [E, N, 9] float64
        if self.noise_std > 0.0:
            for e in (range(self.n_envs) if envs is None else envs):
                noise = self._noise_rngs[e].standard_normal(obs.shape[1:])
                obs[e] += self.noise_std * np.abs(obs[e]) * noise
        if not np.isfinite(obs).all():  # (finite observations, the rule, skip nan_to_num's copies)
            obs = np.nan_to_num(obs, nan=0.0)
        return np.minimum(np.maximum(obs, -1e6), 1e6).astype(np.float32)  # np.clip, without its wrapper

    # -- traces ---------------------------------------------------------------------------------------
    def _trace_stride(self, trace_dt_s: float) -> int:
        """Integration steps between trace samples: at most trace_dt_s, dividing the control step."""
        ctrl = self.grid.steps_for(self.control_dt_s)
        want = max(1, int(trace_dt_s / self.grid.dt_s + 1e-9))
        while ctrl % want:
            want -= 1
        return want

    def _chunks(self, n_steps: int) -> list[int]:
        stride = self._trace_every or n_steps
        return [stride] * (n_steps // stride) + ([n_steps % stride] if n_steps % stride else [])

    def _record(self, envs: np.ndarray) -> None:
        for e, row in zip(envs, self.grid.trace_samples(envs), strict=True):
            self._traces[e].append(row)

    def trace(self, env: int = 0) -> dict[str, np.ndarray]:
        """The current episode's trace of env `env` (warm-up included): t (s, from 0), v_pu, p_w, q_var,
        f_hz, vn_v, each [time, DG]. Needs `trace_dt_s` at construction."""
        if self._trace_every is None:
            raise RuntimeError("construct the environment with trace_dt_s to record traces")
        return stack_trace(self._traces[env])


def _copy_measurements(meas: Measurements) -> Measurements:
    return Measurements(**{name: getattr(meas, name).copy() for name in MEASUREMENT_FIELDS})


class MicrogridEnv:
    """One microgrid environment: reset(seed) -> obs [N, 9]; step(actions [N]) -> obs, rewards, done, info."""

    def __init__(self, system: str | System = "microgrid-6", **kwargs: Any):
        self.vec = VecMicrogridEnv(system, 1, auto_reset=False, **kwargs)
        self.system = self.vec.system
        self.n_agents = self.vec.n_agents
        self.obs_dim = self.vec.obs_dim
        self.n_actions = self.vec.n_actions
        self.episode_steps = self.vec.episode_steps
        self.adjacency = self.vec.adjacency
        self.neighbors = self.vec.neighbors
        self.hop_distance = self.vec.hop_distance

    def reset(self, seed: int = 0) -> np.ndarray:
        return self.vec.reset(seed)[0]

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, bool, dict[str, Any]]:
        a = np.asarray(actions)
        if a.shape != (self.n_agents,):
            raise ValueError(f"actions must have shape ({self.n_agents},), got {a.shape}")
        return self._one(self.vec.step(a[None]))

    def step_setpoints(self, vn_v: Any) -> tuple[np.ndarray, np.ndarray, bool, dict[str, Any]]:
        return self._one(self.vec.step_setpoints(np.asarray(vn_v, dtype=np.float64)[None]))

    @staticmethod
    def _one(out: tuple) -> tuple[np.ndarray, np.ndarray, bool, dict[str, Any]]:
        obs, rewards, done, info = out
        return obs[0], rewards[0], bool(done[0]), {k: (v[0] if isinstance(v, np.ndarray) else v)
                                                   for k, v in info.items()}

    @property
    def links(self) -> np.ndarray | None:
        """[N, D] bool for the current observation, or None without message loss (see VecMicrogridEnv.links)."""
        links = self.vec.links
        return None if links is None else links[0]

    def measure(self) -> Measurements:
        return self.vec.measure()

    def trace(self) -> dict[str, np.ndarray]:
        return self.vec.trace(0)
