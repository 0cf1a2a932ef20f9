"""`env.obs_norm` (docs/scenarios.md#observation-scale): the system file's statistics by default, a scenario's
own droop statistics on request, the same on `classic`, and a policy evaluated on another scenario keeps the
scale it was trained with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from actor.envs import make_vec_env, on_scenario
from common.config import load_config
from launch.cli import main
from simsvc.env import VecMicrogridEnv
from simsvc.obs_stats import droop_observation_stats, observation_scale
from simsvc.systems import load_system

SYSTEM = load_system("microgrid-6")


def env_config(**keys: str):
    return load_config(None, [f"env.{k}={json.dumps(v)}" for k, v in keys.items()]).env


def test_the_default_is_the_system_files_statistics_and_classic_has_no_other() -> None:
    env = make_vec_env(env_config(scenario="sensoroutage"), 1)
    np.testing.assert_array_equal(env.obs_mean, SYSTEM.obs_mean)
    for norm in ("system", "classic"):
        mean, std = observation_scale(SYSTEM, norm)
        np.testing.assert_array_equal(mean, SYSTEM.obs_mean)
        np.testing.assert_array_equal(std, SYSTEM.obs_std)


def test_scenario_statistics_are_the_scenarios_droop_statistics_and_scale_the_observations() -> None:
    env = make_vec_env(env_config(scenario="sensoroutage", obs_norm="scenario"), 2)
    mean, std = droop_observation_stats(SYSTEM, scenario="sensoroutage")
    np.testing.assert_allclose(env.obs_mean, mean, rtol=1e-12)
    np.testing.assert_allclose(env.obs_std, std, rtol=1e-12)
    assert not np.allclose(mean, SYSTEM.obs_mean, rtol=0.05)  # the scenario's loads are far from classic's
    obs = env.reset(0)
    working = ~env.sensor_fault
    expected = ((env.raw_observation(env.measured()) - mean) / std).astype(np.float32)
    np.testing.assert_allclose(obs[working], expected[working], rtol=1e-5, atol=1e-5)
    # on its own scenario's droop episodes the scaled reactive power is centred, unlike with the system's scale
    plain = VecMicrogridEnv("microgrid-6", 16, disturbance="walk", scenario="sensoroutage")
    plain.reset(0)
    raw_q = plain.raw_observation(plain.measure())[..., 2]
    own_scale, system_scale = (raw_q - mean[2]) / std[2], (raw_q - SYSTEM.obs_mean[2]) / SYSTEM.obs_std[2]
    assert abs(own_scale.mean()) < 0.5 < abs(system_scale.mean())


def test_a_policy_evaluated_on_another_scenario_keeps_its_training_scale() -> None:
    trained = env_config(scenario="sensoroutage", obs_norm="scenario")
    other = on_scenario(trained, "classic")
    assert (other.scenario, other.obs_norm_scenario) == ("classic", "sensoroutage")
    env = make_vec_env(other, 1)
    assert env.scenario.name == "classic"
    np.testing.assert_allclose(env.obs_mean, make_vec_env(trained, 1).obs_mean)
    assert on_scenario(env_config(scenario="sensoroutage"), "classic").obs_norm_scenario == ""


def test_training_with_the_scenario_scale_runs_and_a_bad_value_names_the_key(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "-c", "configs/ia2c.toml", "--steps", "40", "--out", str(run), "--progress", "off",
            "--set", "env.scenario=sensoroutage"]
    result = CliRunner().invoke(main, [*args, "--set", "env.obs_norm=scenario"])
    assert result.exit_code == 0, result.output
    assert load_config(run / "config.toml").env.obs_norm == "scenario"
    result = CliRunner().invoke(main, ["evaluate", "--run", str(run), "--episodes", "1", "--scenario", "classic"])
    assert result.exit_code == 0, result.output
    bad = CliRunner().invoke(main, [*args, "--set", "env.obs_norm=bogus", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "env.obs_norm" in bad.output
