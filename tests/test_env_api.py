"""Behaviour of the environment API (docs/mdp.md): seeding, vectorisation, auto-reset, action checks,
smoothing, disturbances, reward, noise, agent graph and numerical robustness. Deterministic and fast."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import InputError
from common.graph import hop_distances
from simsvc.env import OBS_DIM, MicrogridEnv, VecMicrogridEnv
from simsvc.reward import voltage_reward

T = 20  # control steps per episode of microgrid-6/20


def run_episode(env: MicrogridEnv, seed: int, actions: np.ndarray) -> dict[str, np.ndarray]:
    """One whole episode with the given actions [T, N]; everything observable, stacked over steps."""
    out: dict[str, list] = {"obs": [env.reset(seed)], "rewards": [], "v_pu": [], "load_factor": [], "vn_v": []}
    done = False
    for a in actions:
        assert not done
        obs, rewards, done, info = env.step(a)
        out["obs"].append(obs)
        out["rewards"].append(rewards)
        for key in ("v_pu", "load_factor", "vn_v"):
            out[key].append(info[key])
    assert done
    return {k: np.array(v) for k, v in out.items()}


def random_actions(seed: int, n_agents: int = 6, steps: int = T) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 10, size=(steps, n_agents))


# -- seeding ----------------------------------------------------------------------------------------------
def test_same_seed_gives_bit_identical_episode() -> None:
    actions = random_actions(0)
    kw = {"disturbance": "walk", "noise_std": 0.05, "smoothing_beta": 0.5}
    first = run_episode(MicrogridEnv("microgrid-6", **kw), 11, actions)
    env = MicrogridEnv("microgrid-6", **kw)
    run_episode(env, 99, random_actions(1))  # a different episode in between must leave no trace
    second = run_episode(env, 11, actions)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


def test_different_seeds_give_different_episodes() -> None:
    actions = random_actions(0)
    env = MicrogridEnv("microgrid-6", disturbance="walk")
    a, b = run_episode(env, 1, actions), run_episode(env, 2, actions)
    assert not np.array_equal(a["load_factor"], b["load_factor"])
    assert not np.array_equal(a["obs"], b["obs"])
    assert not np.array_equal(a["v_pu"], b["v_pu"])


# -- vectorisation and auto-reset ---------------------------------------------------------------------------
def test_vec_env_e_runs_the_episodes_of_seed_plus_e_plus_k_times_e() -> None:
    n_envs, seed, episodes = 3, 40, 2
    kw = {"disturbance": "walk", "noise_std": 0.02, "smoothing_beta": 0.2}
    actions = np.random.default_rng(5).integers(0, 10, size=(episodes * T, n_envs, 6))
    vec = VecMicrogridEnv("microgrid-6", n_envs, **kw)
    vec_obs = [vec.reset(seed)]
    vec_rew, vec_v, vec_seed = [], [], []
    for t in range(episodes * T):
        obs, rewards, done, info = vec.step(actions[t])
        assert done.all() == ((t + 1) % T == 0) and (done.all() or not done.any())
        vec_rew.append(rewards)
        vec_v.append(info["v_pu"])
        vec_seed.append(info["episode_seed"])
        vec_obs.append(info["final_obs"] if done.all() else obs)
        if done.all() and t + 1 < episodes * T:
            vec_obs.append(obs)  # the next episode's first observation
    vec_obs, vec_rew, vec_v, vec_seed = map(np.array, (vec_obs, vec_rew, vec_v, vec_seed))

    single = MicrogridEnv("microgrid-6", **kw)
    for e in range(n_envs):
        for k in range(episodes):
            steps = slice(k * T, (k + 1) * T)
            ref = run_episode(single, seed + e + k * n_envs, actions[steps, e])
            np.testing.assert_array_equal(vec_obs[k * (T + 1):(k + 1) * (T + 1), e], ref["obs"])
            np.testing.assert_array_equal(vec_rew[steps, e], ref["rewards"])
            np.testing.assert_array_equal(vec_v[steps, e], ref["v_pu"])
            assert set(vec_seed[steps, e].tolist()) == {seed + e + k * n_envs}


def test_auto_reset_returns_next_first_obs_and_final_obs_in_info() -> None:
    vec = VecMicrogridEnv("microgrid-6", 2, disturbance="episode")
    vec.reset(0)
    for _ in range(T - 1):
        obs, _, done, info = vec.step(np.full((2, 6), 3))
        assert not done.any() and "final_obs" not in info
    last_obs, _, done, info = vec.step(np.full((2, 6), 3))
    assert done.all()
    next_first = VecMicrogridEnv("microgrid-6", 2, disturbance="episode").reset(2)  # seeds 0+2, 1+2
    np.testing.assert_array_equal(last_obs, next_first)
    assert not np.array_equal(info["final_obs"], last_obs)
    assert info["final_obs"].shape == (2, 6, OBS_DIM)
    # The next step belongs to the new episode: step 1 again, with the new episode's seeds.
    _, _, done, info = vec.step(np.full((2, 6), 3))
    assert info["step"].tolist() == [1, 1] and info["episode_seed"].tolist() == [2, 3]


def test_diverged_env_restarts_alone_and_leaves_the_others_untouched() -> None:
    kw = {"disturbance": "walk", "noise_std": 0.05}
    actions = random_actions(8, steps=T)
    vec = VecMicrogridEnv("microgrid-6", 2, **kw)
    vec.reset(50)
    vec.grid.x[0, 0] = np.nan  # env 0 blows up during the first step
    obs, rewards, done, info = vec.step(np.stack([actions[0], actions[0]]))
    assert done.tolist() == [True, False] and info["diverged"].tolist() == [True, False]
    assert np.all(rewards[0] == -10.0)
    assert np.all(np.isfinite(obs)) and np.all(np.isfinite(info["final_obs"]))
    v_env1 = [info["v_pu"][1]]
    for t in range(1, T):
        obs, rewards, done, info = vec.step(np.stack([actions[t], actions[t]]))
        v_env1.append(info["v_pu"][1])
        assert info["episode_seed"].tolist() == [52, 51]  # env 0 moved on to seed 50 + 0 + 1·E
    assert done.tolist() == [False, True]
    ref = run_episode(MicrogridEnv("microgrid-6", **kw), 51, actions)
    np.testing.assert_array_equal(np.array(v_env1), ref["v_pu"])

def _drive(vec: VecMicrogridEnv, actions: np.ndarray, seed: int, diverge: tuple[int, int] | None = None,
           finish_late: bool = False) -> dict[str, np.ndarray]:
    """Step `vec` through actions [steps, E, N]; with deferred resets call finish_resets right after a done
    step, or (`finish_late`) only once an unrelated observation was read, just before the next step.
    `diverge` = (step, env) poisons that env's state before that step. Returns everything observable."""
    out: dict[str, list] = {"obs": [vec.reset(seed)], "rewards": [], "v_pu": [], "load_factor": [],
                            "final_obs": [], "seed": []}
    pending = False
    for t, a in enumerate(actions):
        if pending:
            assert vec.resets_pending
            out["obs"].append(vec.finish_resets())
            pending = False
        if diverge is not None and diverge[0] == t:
            vec.grid.x[diverge[1], 0] = np.nan
        obs, rewards, done, info = vec.step(a)
        out["rewards"].append(rewards)
        out["v_pu"].append(info["v_pu"])
        out["load_factor"].append(info["load_factor"])
        out["seed"].append(info["episode_seed"])
        out["final_obs"].append(info.get("final_obs", np.zeros_like(obs)))
        if vec.defer_reset and done.any():
            np.testing.assert_array_equal(obs, info["final_obs"])  # nothing restarted yet
            if finish_late:
                pending = True
                continue
            obs = vec.finish_resets()
        out["obs"].append(obs)
    if pending:
        out["obs"].append(vec.finish_resets())
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize("finish_late", [False, True])
@pytest.mark.parametrize("kw", [{"disturbance": "walk", "noise_std": 0.05, "smoothing_beta": 0.2},
                                {"disturbance": "episode", "noise_std": 0.0, "smoothing_beta": 0.0}])
def test_deferred_reset_gives_bit_identical_episodes(kw: dict, finish_late: bool) -> None:
    n_envs, episodes = 3, 3
    actions = np.random.default_rng(9).integers(0, 10, size=(episodes * T, n_envs, 6))
    for diverge in (None, (7, 1)):  # also an env that ends early and restarts alone
        ref = _drive(VecMicrogridEnv("microgrid-6", n_envs, **kw), actions, 21, diverge)
        got = _drive(VecMicrogridEnv("microgrid-6", n_envs, defer_reset=True, **kw), actions, 21, diverge,
                     finish_late)
        for key in ref:
            np.testing.assert_array_equal(got[key], ref[key], err_msg=f"{key} (diverge={diverge})")


def test_deferred_reset_refuses_to_step_until_resets_are_finished() -> None:
    vec = VecMicrogridEnv("microgrid-6", 2, defer_reset=True)
    first = vec.reset(0)
    assert not vec.resets_pending
    np.testing.assert_array_equal(vec.finish_resets(), first)  # nothing pending: the latest observations
    for _ in range(T):
        obs, _, done, info = vec.step(np.full((2, 6), 3))
    assert done.all() and vec.resets_pending
    assert info["step"].tolist() == [T, T] and info["episode_seed"].tolist() == [0, 1]
    with pytest.raises(RuntimeError, match="finish_resets"):
        vec.step(np.full((2, 6), 3))
    with pytest.raises(RuntimeError, match="finish_resets"):
        vec.step_setpoints(np.full((2, 6), 400.0))
    fresh = vec.finish_resets()
    assert not vec.resets_pending
    np.testing.assert_array_equal(fresh, VecMicrogridEnv("microgrid-6", 2).reset(2))
    np.testing.assert_array_equal(vec.finish_resets(), fresh)  # idempotent: no second warm-up
    _, _, _, info = vec.step(np.full((2, 6), 3))
    assert info["step"].tolist() == [1, 1] and info["episode_seed"].tolist() == [2, 3]
    vec.step(np.full((2, 6), 3))
    for _ in range(T - 2):
        vec.step(np.full((2, 6), 3))
    assert vec.resets_pending
    vec.reset(5)  # reset(seed) drops pending restarts
    assert not vec.resets_pending
    immediate = VecMicrogridEnv("microgrid-6", 1)
    immediate.reset(0)
    with pytest.raises(RuntimeError, match="defer_reset"):
        immediate.finish_resets()



@pytest.mark.parametrize("n_steps", [T, 15])  # windows on episode boundaries, and windows straddling them
def test_rollout_collector_gives_identical_windows_with_deferred_resets(n_steps: int) -> None:
    import torch

    from actor.policy import ActingPolicy
    from actor.rollout import RolloutCollector
    from actor.sampler import action_sampler
    from common.config import load_config
    from common.nets import build_model, weight_arrays

    cfg = load_config("configs/powernet.toml")
    kw = {"disturbance": "walk", "noise_std": 0.02, "smoothing_beta": 0.2}
    windows = {}
    for defer in (False, True):
        env = VecMicrogridEnv("microgrid-6", 2, defer_reset=defer, **kw)
        torch.manual_seed(0)
        model = build_model(cfg.model, env.adjacency, env.obs_dim, env.n_actions)
        policy = ActingPolicy.for_model(cfg.model, env.adjacency, env.obs_dim, env.n_actions)
        policy.load(weight_arrays(model))
        col = RolloutCollector(env, policy, n_steps, action_sampler(3))
        col.reset(7)
        out = []
        for k in range(4):
            if k == 1:  # env 1 diverges in its first step: a restart in the middle of a window
                col.finish_resets()  # (poison the new episode, not one whose restart is still pending)
                env.grid.x[1, 0] = np.nan
            rollout, stats = col.collect(k)
            out.append((rollout, stats))
            if defer and k % 2:
                col.finish_resets()  # as an actor does after sending; the next collect does it otherwise
        windows[defer] = out
    for (a, sa), (b, sb) in zip(windows[False], windows[True], strict=True):
        for name, arr in a.arrays().items():
            np.testing.assert_array_equal(b.arrays()[name], arr, err_msg=name)
        assert sa == sb


def test_without_auto_reset_stepping_a_finished_episode_raises() -> None:
    env = MicrogridEnv("microgrid-6")
    run_episode(env, 0, random_actions(0))
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(6, dtype=int))


# -- action validation ----------------------------------------------------------------------------------
BAD_DISCRETE = [
    (np.zeros(5, dtype=int), "shape"),
    (np.zeros((6, 1), dtype=int), "shape"),
    (np.array([0, 1, 2, 3, 4, 10]), "integers in 0..9"),
    (np.array([0, 1, 2, 3, 4, -1]), "integers in 0..9"),
    (np.array([0, 1, 2, 3, 4, np.nan]), "NaN"),
    (np.array([0, 1, 2, 3, 4, np.inf]), "NaN or inf"),
    (np.array([0, 1, 2, 3, 4, 2.5]), "integers"),
    (np.array(["0"] * 6), "numbers"),
    (np.array([True] * 6), "numbers"),
]


@pytest.mark.parametrize(("actions", "message"), BAD_DISCRETE)
def test_bad_discrete_action_raises_value_error_and_does_not_advance(actions: np.ndarray, message: str) -> None:
    env = MicrogridEnv("microgrid-6")
    env.reset(0)
    env.step(np.full(6, 2))
    x_before, t_before = env.vec.grid.x.copy(), env.vec.grid.t_s.copy()
    with pytest.raises(ValueError, match=message):
        env.step(actions)
    np.testing.assert_array_equal(env.vec.grid.x, x_before)
    np.testing.assert_array_equal(env.vec.grid.t_s, t_before)
    _, _, _, info = env.step(np.full(6, 2))
    assert info["step"] == 2


@pytest.mark.parametrize("bad", [1.0001, -1.5, np.nan])
def test_continuous_action_outside_unit_interval_raises(bad: float) -> None:
    env = MicrogridEnv("microgrid-6", action_mode="continuous")
    env.reset(0)
    x_before = env.vec.grid.x.copy()
    with pytest.raises(ValueError, match=r"\[-1, 1\]|NaN"):
        env.step(np.array([0.0, 0.5, -0.5, 1.0, -1.0, bad]))
    np.testing.assert_array_equal(env.vec.grid.x, x_before)


def test_vec_actions_of_wrong_shape_raise() -> None:
    vec = VecMicrogridEnv("microgrid-6", 2)
    vec.reset(0)
    with pytest.raises(ValueError, match=r"shape \(2, 6\)"):
        vec.step(np.zeros((6,), dtype=int))


def test_action_maps_to_setpoints_of_the_spec() -> None:
    env = VecMicrogridEnv("microgrid-6", 1)
    np.testing.assert_array_equal(env.actions_to_setpoints(np.arange(6)[None]), 490.0 + 5.0 * np.arange(6)[None])
    np.testing.assert_array_equal(env.actions_to_setpoints(np.array([[9] * 6])), np.full((1, 6), 535.0))
    cont = VecMicrogridEnv("microgrid-6", 1, action_mode="continuous")
    np.testing.assert_allclose(cont.actions_to_setpoints(np.array([[-1.0, 0.0, 1.0, 0.5, -0.5, 0.2]])),
                               [[490.0, 515.0, 540.0, 527.5, 502.5, 520.0]])


@pytest.mark.parametrize("kwargs", [{"disturbance": "storm"}, {"action_mode": "binary"}, {"smoothing_beta": 1.0},
                                    {"smoothing_beta": -0.1}, {"noise_std": -0.01}])
def test_bad_constructor_arguments_raise_input_error(kwargs: dict) -> None:
    with pytest.raises(InputError):
        VecMicrogridEnv("microgrid-6", 1, **kwargs)


def test_system_without_episode_is_refused() -> None:
    with pytest.raises(InputError, match="episode"):
        MicrogridEnv("bidram-4")


# -- action smoothing ---------------------------------------------------------------------------------------
def test_smoothing_applies_beta_times_previous_plus_one_minus_beta_times_command() -> None:
    env = MicrogridEnv("microgrid-6", smoothing_beta=0.5)
    env.reset(0)
    # Commanded set-points: a=2 -> 500 V, a=6 -> 520 V, a=0 -> 490 V. Start from V_nom = 480 V.
    # 0.5*480 + 0.5*500 = 490;  0.5*490 + 0.5*520 = 505;  0.5*505 + 0.5*490 = 497.5
    applied = [env.step(np.full(6, a))[3]["vn_v"] for a in (2, 6, 0)]
    np.testing.assert_array_equal(np.array(applied), np.array([[490.0] * 6, [505.0] * 6, [497.5] * 6]))


def test_smoothing_restarts_from_v_nom_after_auto_reset() -> None:
    vec = VecMicrogridEnv("microgrid-6", 1, smoothing_beta=0.25)
    vec.reset(0)
    for _ in range(T):
        vec.step(np.full((1, 6), 9))
    _, _, _, info = vec.step(np.full((1, 6), 4))  # 0.25*480 + 0.75*510 = 502.5
    np.testing.assert_array_equal(info["vn_v"], np.full((1, 6), 502.5))


def test_zero_beta_applies_the_command_directly() -> None:
    env = MicrogridEnv("microgrid-6")
    env.reset(0)
    for a in (7, 1):
        np.testing.assert_array_equal(env.step(np.full(6, a))[3]["vn_v"], np.full(6, 490.0 + 5.0 * a))


# -- disturbances -------------------------------------------------------------------------------------------
def test_no_disturbance_keeps_every_load_at_nominal() -> None:
    ep = run_episode(MicrogridEnv("microgrid-6", disturbance="none"), 3, random_actions(3))
    assert np.all(ep["load_factor"] == 1.0)


def test_episode_disturbance_is_fixed_within_episode_and_inside_range() -> None:
    env = MicrogridEnv("microgrid-6", disturbance="episode")
    firsts = []
    for seed in range(4):
        lf = run_episode(env, seed, random_actions(seed))["load_factor"]
        assert np.all(lf == lf[0])
        assert np.all((lf >= 0.8) & (lf <= 1.2))
        firsts.append(lf[0])
    assert len({tuple(f) for f in firsts}) == 4


def test_walk_disturbance_moves_each_load_by_at_most_005_per_step() -> None:
    lf = run_episode(MicrogridEnv("microgrid-6", disturbance="walk"), 4, random_actions(4))["load_factor"]
    assert np.all((lf[0] >= 0.8) & (lf[0] <= 1.2))
    steps = np.abs(np.diff(lf, axis=0))
    assert np.all(steps <= 0.05) and np.all(steps > 0.0)


# -- reward ---------------------------------------------------------------------------------------------
def test_voltage_reward_matches_spec_on_hand_picked_voltages() -> None:
    v = np.array([0.95, 1.0, 1.05, 0.9, 0.8, 1.25, 1.1, 0.8000001, 1.2499999])
    # docs/mdp.md#rewards: 0.05 − |1 − v| in [0.95, 1.05]; −10 at v ≤ 0.8 or v ≥ 1.25; −|1 − v| otherwise.
    expected = np.array([0.05 - abs(1 - 0.95), 0.05, 0.05 - abs(1 - 1.05), -abs(1 - 0.9), -10.0, -10.0,
                         -abs(1 - 1.1), -abs(1 - 0.8000001), -abs(1 - 1.2499999)])
    np.testing.assert_array_equal(voltage_reward(v), expected)
    np.testing.assert_allclose(voltage_reward(v)[:7], [0.0, 0.05, 0.0, -0.1, -10.0, -10.0, -0.1], atol=1e-12)


def test_step_reward_is_voltage_reward_of_the_reported_voltages() -> None:
    env = MicrogridEnv("microgrid-6", disturbance="walk")
    env.reset(0)
    for a in random_actions(0, steps=5):
        _, rewards, _, info = env.step(a)
        np.testing.assert_array_equal(rewards, voltage_reward(info["v_pu"]).astype(np.float32))


# -- observations and noise ----------------------------------------------------------------------------------
def test_observations_are_finite_float32_of_declared_shape() -> None:
    vec = VecMicrogridEnv("microgrid-20", 2, noise_std=0.1)
    obs = vec.reset(0)
    assert obs.shape == (2, 20, OBS_DIM) and obs.dtype == np.float32
    for a in random_actions(1, n_agents=40, steps=5):
        obs, rewards, done, _ = vec.step(a.reshape(2, 20))
        assert obs.shape == (2, 20, OBS_DIM) and obs.dtype == np.float32 and np.all(np.isfinite(obs))
        assert rewards.shape == (2, 20) and rewards.dtype == np.float32 and done.shape == (2,)


def test_noise_changes_observations_only_when_enabled_and_is_reproducible() -> None:
    actions = random_actions(2)
    clean = run_episode(MicrogridEnv("microgrid-6", disturbance="episode"), 6, actions)
    clean_again = run_episode(MicrogridEnv("microgrid-6", disturbance="episode", noise_std=0.0), 6, actions)
    noisy = run_episode(MicrogridEnv("microgrid-6", disturbance="episode", noise_std=0.05), 6, actions)
    noisy_again = run_episode(MicrogridEnv("microgrid-6", disturbance="episode", noise_std=0.05), 6, actions)
    np.testing.assert_array_equal(clean["obs"], clean_again["obs"])
    np.testing.assert_array_equal(noisy["obs"], noisy_again["obs"])
    assert not np.array_equal(noisy["obs"], clean["obs"])
    np.testing.assert_allclose(noisy["obs"], clean["obs"], rtol=0.5, atol=1e-6)  # 5 % noise, not a new episode


@pytest.mark.parametrize("disturbance", ["episode", "walk"])
def test_measurement_noise_does_not_change_the_physics(disturbance: str) -> None:
    actions = random_actions(9)
    clean = run_episode(MicrogridEnv("microgrid-6", disturbance=disturbance), 12, actions)
    noisy = run_episode(MicrogridEnv("microgrid-6", disturbance=disturbance, noise_std=0.1), 12, actions)
    for key in ("rewards", "v_pu", "load_factor"):
        np.testing.assert_array_equal(noisy[key], clean[key], err_msg=key)


# -- agent graph ----------------------------------------------------------------------------------------
MG6_EDGES = [(1, 2), (1, 3), (2, 3), (2, 4), (3, 5), (4, 5), (4, 6), (5, 6)]


def test_microgrid6_neighbours_and_hop_distances_match_its_graph() -> None:
    env = MicrogridEnv("microgrid-6")
    adjacency = np.zeros((6, 6), dtype=int)
    for i, j in MG6_EDGES:
        adjacency[i - 1, j - 1] = adjacency[j - 1, i - 1] = 1
    np.testing.assert_array_equal(env.adjacency.astype(int), adjacency)
    assert [n.tolist() for n in env.neighbors] == [[1, 2], [0, 2, 3], [0, 1, 4], [1, 4, 5], [2, 3, 5], [3, 4]]
    expected_hops = np.array([[0, 1, 1, 2, 2, 3],
                              [1, 0, 1, 1, 2, 2],
                              [1, 1, 0, 2, 1, 2],
                              [2, 1, 2, 0, 1, 1],
                              [2, 2, 1, 1, 0, 1],
                              [3, 2, 2, 1, 1, 0]])
    np.testing.assert_array_equal(env.hop_distance, expected_hops)


def unreachable_pairs(hop_distance: np.ndarray) -> list[tuple[int, int]]:
    """Agent pairs with no path between them (common.graph.hop_distances gives those the value N)."""
    return [(int(i), int(j)) for i, j in np.argwhere(hop_distance >= hop_distance.shape[0])]


def test_microgrid20_agent_graph_is_symmetric_and_connected() -> None:
    env = MicrogridEnv("microgrid-20")
    assert env.n_agents == 20
    np.testing.assert_array_equal(env.adjacency, env.adjacency.T)
    assert np.all(np.diag(env.adjacency) == 0)
    assert np.all(env.hop_distance >= 0)
    np.testing.assert_array_equal(env.hop_distance, env.hop_distance.T)
    assert unreachable_pairs(env.hop_distance) == []
    for i, nbrs in enumerate(env.neighbors):
        assert np.all(env.hop_distance[i, nbrs] == 1)


def test_connectivity_check_finds_the_pairs_of_a_disconnected_agent_graph() -> None:
    adjacency = np.zeros((5, 5), dtype=int)
    for i, j in [(0, 1), (1, 2), (3, 4)]:  # two components: {0, 1, 2} and {3, 4}
        adjacency[i, j] = adjacency[j, i] = 1
    across = [(i, j) for i in range(3) for j in (3, 4)]
    expected = sorted(across + [(j, i) for i, j in across])
    assert unreachable_pairs(hop_distances(adjacency)) == expected
    adjacency[2, 3] = adjacency[3, 2] = 1  # one more edge joins them
    assert unreachable_pairs(hop_distances(adjacency)) == []


# -- stability over the full action range -----------------------------------------------------------------
@pytest.mark.parametrize("system,n_agents", [("microgrid-6", 6), ("microgrid-20", 20)])
@pytest.mark.parametrize("policy", ["all_min", "all_max", "random"])
def test_no_state_becomes_nan_or_inf_under_full_action_range(system: str, n_agents: int, policy: str) -> None:
    n_envs, episodes = 3, 2
    vec = VecMicrogridEnv(system, n_envs, disturbance="walk")
    vec.reset(100)
    rng = np.random.default_rng(17)
    for _ in range(episodes * T):
        if policy == "random":
            actions = rng.integers(0, 10, size=(n_envs, n_agents))
        else:
            actions = np.full((n_envs, n_agents), 0 if policy == "all_min" else 9)
        obs, rewards, done, info = vec.step(actions)
        assert not info["diverged"].any()
        assert np.all(np.isfinite(vec.grid.x))
        for key in ("v_pu", "f_hz", "p_w", "q_var"):
            assert np.all(np.isfinite(info[key])), key
        assert np.all((info["v_pu"] > 0.8) & (info["v_pu"] < 1.25))
        assert np.all(np.isfinite(obs)) and np.all(np.isfinite(rewards))
