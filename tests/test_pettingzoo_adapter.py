"""The PettingZoo adapter: PettingZoo's own API checks, and that it is a faithful view of MicrogridEnv."""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

from simsvc.env import MicrogridEnv
from simsvc.pettingzoo_env import MicrogridParallelEnv, parallel_env


@pytest.mark.parametrize("action_mode", ["discrete", "continuous"])
def test_passes_pettingzoo_parallel_api_test(action_mode: str) -> None:
    env = parallel_env("microgrid-6", action_mode=action_mode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the API test reports some violations only as warnings
        parallel_api_test(env, num_cycles=30)  # longer than an episode: the end is exercised too


def test_spaces_names_and_metadata_follow_the_spec() -> None:
    env = MicrogridParallelEnv("microgrid-6")
    assert env.possible_agents == [f"dg_{i}" for i in range(1, 7)]
    assert env.metadata["name"]
    for agent in env.possible_agents:
        obs_space = env.observation_space(agent)
        assert isinstance(obs_space, gymnasium.spaces.Box)
        assert obs_space.shape == (9,) and obs_space.dtype == np.float32
        assert env.action_space(agent) == gymnasium.spaces.Discrete(10)
    cont = MicrogridParallelEnv("microgrid-6", action_mode="continuous")
    assert cont.action_space("dg_1") == gymnasium.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
    assert env.neighbors["dg_1"] == ["dg_2", "dg_3"]


def test_rollout_gives_the_same_episode_as_microgrid_env() -> None:
    seed = 7
    rng = np.random.default_rng(123)
    actions = rng.integers(0, 10, size=(20, 6))
    direct = MicrogridEnv("microgrid-6", noise_std=0.05, smoothing_beta=0.3)
    pz = MicrogridParallelEnv("microgrid-6", noise_std=0.05, smoothing_beta=0.3)
    obs_d = direct.reset(seed)
    obs_p, infos = pz.reset(seed=seed)
    np.testing.assert_array_equal(np.stack([obs_p[a] for a in pz.possible_agents]), obs_d)
    for t in range(20):
        obs_d, rew_d, done_d, info_d = direct.step(actions[t])
        obs_p, rew_p, term, trunc, infos = pz.step({f"dg_{i + 1}": actions[t, i] for i in range(6)})
        np.testing.assert_array_equal(np.stack([obs_p[f"dg_{i + 1}"] for i in range(6)]), obs_d)
        assert [rew_p[f"dg_{i + 1}"] for i in range(6)] == [float(r) for r in rew_d]
        assert [infos[f"dg_{i + 1}"]["v_pu"] for i in range(6)] == info_d["v_pu"].tolist()
        assert all(not v for v in term.values())
        assert all(v == done_d for v in trunc.values())
    assert done_d and pz.agents == []


def test_horizon_is_a_truncation_and_agents_leave_when_done() -> None:
    env = MicrogridParallelEnv("microgrid-6")
    env.reset(seed=0)
    for t in range(20):
        obs, rew, term, trunc, infos = env.step(dict.fromkeys(env.agents, 4))
        assert set(obs) == set(rew) == set(term) == set(trunc) == set(infos) == set(env.possible_agents)
        assert not any(term.values())
        assert all(trunc.values()) == (t == 19)
    assert env.agents == []
    with pytest.raises(RuntimeError, match="reset"):
        env.step({})


def test_diverged_simulation_is_a_termination_with_penalty() -> None:
    env = MicrogridParallelEnv("microgrid-6")
    env.reset(seed=0)
    env.env.vec.grid.x[0, 0] = np.nan  # force the integrator to blow up during the next step
    obs, rew, term, trunc, infos = env.step(dict.fromkeys(env.agents, 0))
    assert all(term.values()) and not any(trunc.values())
    assert set(rew.values()) == {-10.0}
    assert all(np.all(np.isfinite(o)) for o in obs.values())
    assert env.agents == []


def test_infos_carry_each_dgs_measurements() -> None:
    env = MicrogridParallelEnv("microgrid-6")
    _, infos = env.reset(seed=3)
    assert set(infos) == set(env.possible_agents)
    _, _, _, _, infos = env.step(dict.fromkeys(env.agents, 2))
    for info in infos.values():
        assert set(info) >= {"v_pu", "f_hz", "p_w", "q_var"}
        assert all(np.isfinite(v) for v in info.values())
        assert 0.8 < info["v_pu"] < 1.25 and 59.0 < info["f_hz"] < 61.0


def test_state_is_all_observations_concatenated() -> None:
    env = MicrogridParallelEnv("microgrid-6")
    obs, _ = env.reset(seed=1)
    state = env.state()
    assert env.state_space.contains(state)
    np.testing.assert_array_equal(state, np.concatenate([obs[a] for a in env.possible_agents]))


def test_reset_without_seed_runs_the_next_seed() -> None:
    env = MicrogridParallelEnv("microgrid-6")
    env.reset(seed=5)
    obs_next, _ = env.reset()
    obs_six, _ = MicrogridParallelEnv("microgrid-6").reset(seed=6)
    for a in env.possible_agents:
        np.testing.assert_array_equal(obs_next[a], obs_six[a])


def test_bad_action_dicts_are_rejected() -> None:
    env = MicrogridParallelEnv("microgrid-6")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="missing"):
        env.step({"dg_1": 0})
    with pytest.raises(ValueError, match="unknown"):
        env.step({**dict.fromkeys(env.agents, 0), "dg_99": 0})
    with pytest.raises(ValueError, match="integers"):
        env.step({**dict.fromkeys(env.agents, 0), "dg_2": 10})
