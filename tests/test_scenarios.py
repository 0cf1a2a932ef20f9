"""Scenarios (docs/scenarios.md): files and their errors, `classic` as the default, and each switch doing what
it says on a hand-checked case: independent R and L draws and the walk in evaluation (`paper`), a load step at
its step, a delay of exactly one step, the sharing penalty and the load-bus term on hand-computed values, the
secondary controller's sharing term, the reward bounds. Deterministic and fast (microgrid-6)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from common.config import Config, load_config
from common.errors import InputError
from launch.cli import main
from launch.run_bounds import run_bounds
from simsvc.controllers import SHARING_GAIN_PER_S, make_controller
from simsvc.env import MicrogridEnv, VecMicrogridEnv
from simsvc.gap import LocalRule, information_gap
from simsvc.reward import SHARING_CAP_PU, neighbour_mean_matrix, reward_bounds, sharing_error_pu, voltage_reward
from simsvc.scenario_effects import loadbus_assignment
from simsvc.scenarios import Scenario, available_scenarios, load_scenario, parse_scenario
from simsvc.simulator import Measurements
from simsvc.systems import DG_COL, load_system

SYSTEM = load_system("microgrid-6")


def episode(env: MicrogridEnv, seed: int, steps: int = 20, action: int = 7) -> dict[str, list]:
    out: dict[str, list] = {"obs": [env.reset(seed)], "measured_q": [env.vec.measured().q_var[0].copy()]}
    for _ in range(steps):
        obs, rewards, done, info = env.step(np.full(env.n_agents, action))
        out["obs"].append(obs)
        out["measured_q"].append(env.vec.measured().q_var[0].copy())
        for key in ("rewards", "info"):
            out.setdefault(key, []).append(rewards if key == "rewards" else info)
        if done:
            break
    return out


# -- files ---------------------------------------------------------------------------------------------------
def test_shipped_scenarios_load_and_classic_is_the_default() -> None:
    assert {"classic", "paper", "stress", "sharing", "loadbus", "delayed"} <= set(available_scenarios())
    assert Config().env.scenario == "classic"
    assert load_scenario("classic").is_classic and load_scenario(None).name == "classic"
    for name in ("paper", "stress", "sharing", "loadbus", "delayed"):
        assert not load_scenario(name).is_classic, name


@pytest.mark.parametrize("doc, message", [
    ({"walk": {"stepp": 0.1}}, "walk.stepp: unknown key"),
    ({"loads": {"factor_range": [1.2, 0.8]}}, "loads.factor_range: low 1.2 is above high 0.8"),
    ({"loads": {"factor_range": [0.1, 1.2]}}, "loads.factor_range: must lie within walk.bounds"),
    ({"measurement": {"delay_steps": 0.5}}, "measurement.delay_steps: expected an integer"),
    ({"reward": {"sharing_weight": -1}}, "reward.sharing_weight: must be >= 0"),
    ({"reward": 3}, "reward: expected a table"),
    ({"load_step": {"size": [0, 0.1]}}, "load_step.window: missing"),
    ({"noise": {}}, "noise: unknown key"),
])
def test_a_malformed_scenario_is_one_error_naming_the_key(doc: dict, message: str) -> None:
    with pytest.raises(InputError, match="^bad.toml: " + message.replace("(", r"\(").replace("[", r"\[")):
        parse_scenario(doc, "bad.toml")


def test_unknown_or_broken_scenarios_stop_the_cli_with_one_line_and_status_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[walk]\nbounds = [0.5]\n")
    runs = [["train", "-c", "configs/powernet.toml", "--out", str(tmp_path / "r"), "--set", "env.scenario=nope"],
            ["train", "-c", "configs/powernet.toml", "--out", str(tmp_path / "r"), "--set", f"env.scenario='{broken}'"],
            ["evaluate", "--run", str(tmp_path / "r"), "--scenario", "nope"],
            ["sim", "--scenario", str(broken), "--out", str(tmp_path / "s")]]
    for args in runs:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        assert "unknown scenario 'nope'" in lines[0] or "broken.toml: walk.bounds: expected two numbers" in lines[0]


# -- classic ---------------------------------------------------------------------------------------------------
def test_classic_by_name_is_the_environment_without_a_scenario() -> None:
    kw = {"disturbance": "walk", "noise_std": 0.05, "smoothing_beta": 0.3}
    a = episode(MicrogridEnv("microgrid-6", **kw), 5, steps=6)
    b = episode(MicrogridEnv("microgrid-6", scenario="classic", **kw), 5, steps=6)
    for x, y in zip(a["obs"] + a["rewards"], b["obs"] + b["rewards"], strict=True):
        np.testing.assert_array_equal(x, y)
    assert set(a["info"][0]) == set(b["info"][0]) and "load_factor_rl" not in a["info"][0]


# -- paper: independent R and L, the walk in evaluation -----------------------------------------------------
def test_paper_draws_independent_r_and_l_factors_from_the_episode_seed() -> None:
    seed = 31
    env = VecMicrogridEnv("microgrid-6", 1, disturbance="episode", scenario="paper")
    env.reset(seed)
    rng = np.random.default_rng(seed)
    r, ell = rng.uniform(0.8, 1.2, size=4), rng.uniform(0.8, 1.2, size=4)  # the original's draws, by hand
    np.testing.assert_allclose(env.grid._load_r[0] / SYSTEM.load_r_ohm, r, rtol=1e-12)
    np.testing.assert_allclose(env.grid._load_l[0] / SYSTEM.load_l_h, ell, rtol=1e-12)
    # over many episodes the two factors are uncorrelated and cover U(0.8, 1.2)
    many = VecMicrogridEnv("microgrid-6", 64, disturbance="episode", scenario="paper")
    many.reset(1000)
    fr = (many.grid._load_r / SYSTEM.load_r_ohm).ravel()
    fl = (many.grid._load_l / SYSTEM.load_l_h).ravel()
    assert abs(np.corrcoef(fr, fl)[0, 1]) < 0.2
    assert 0.8 <= min(fr.min(), fl.min()) and max(fr.max(), fl.max()) <= 1.2
    assert abs(fr.mean() - 1.0) < 0.03 and abs(fl.mean() - 1.0) < 0.03
    classic = VecMicrogridEnv("microgrid-6", 1, disturbance="episode")
    classic.reset(seed)
    np.testing.assert_array_equal(classic.grid._load_r[0] / SYSTEM.load_r_ohm, classic.grid.load_factor[0])


def test_paper_keeps_the_walk_in_evaluation_with_r_and_l_walking_apart() -> None:
    paper, classic = load_scenario("paper"), load_scenario("classic")
    assert paper.evaluation_disturbance() == "walk" and classic.evaluation_disturbance() == "episode"
    env = MicrogridEnv("microgrid-6", disturbance=paper.evaluation_disturbance(), scenario=paper)
    out = episode(env, 2000, steps=5)
    rl = np.array([i["load_factor_rl"] for i in out["info"]])  # [steps, 2, n_load], loads of each step
    steps = np.diff(rl, axis=0)
    assert np.all(np.abs(steps) <= 0.05 + 1e-12) and np.all(np.abs(steps) > 0)
    assert not np.allclose(steps[:, 0], steps[:, 1])  # R and L take their own steps
    np.testing.assert_array_equal(rl[:, 1], np.array([i["load_factor"] for i in out["info"]]))


# -- load steps, delay, noise --------------------------------------------------------------------------------
def test_a_load_step_acts_from_its_control_step() -> None:
    sc = replace(load_scenario("classic"), load_steps=True, step_window=(7, 7), step_size=(0.3, 0.3))
    env = MicrogridEnv("microgrid-6", disturbance="episode", scenario=sc)
    out = episode(env, 12, steps=20)
    factors = np.array([i["load_factor"] for i in out["info"]])
    first = np.random.default_rng(12).uniform(0.8, 1.2, size=4)
    np.testing.assert_array_equal(factors[:7], np.repeat(first[None], 7, axis=0))
    np.testing.assert_allclose(factors[7:], np.repeat(np.clip(first + 0.3, 0.5, 1.5)[None], 13, axis=0), rtol=1e-15)
    v = np.array([i["v_pu"] for i in out["info"]])
    assert np.abs(v[7] - v[6]).max() > 10 * np.abs(v[6] - v[5]).max()  # the grid feels it in step 7


def test_delayed_observations_arrive_exactly_one_step_late() -> None:
    fresh = episode(MicrogridEnv("microgrid-6", disturbance="walk", scenario="paper"), 44, steps=6)
    late = episode(MicrogridEnv("microgrid-6", disturbance="walk", scenario="delayed"), 44, steps=6)
    for t in range(1, 7):  # the observation after step t is the one the undelayed env gave after step t-1
        np.testing.assert_array_equal(late["obs"][t], fresh["obs"][t - 1])
        np.testing.assert_array_equal(late["measured_q"][t], fresh["measured_q"][t - 1])
    for a, b in zip(late["rewards"], fresh["rewards"], strict=True):  # the physics and reward are untouched
        np.testing.assert_array_equal(a, b)
    # the first observation is the measurement one control step before the warm-up ends
    assert not np.array_equal(late["obs"][0], fresh["obs"][0])


def test_sensor_noise_is_relative_to_the_si_value_and_leaves_the_physics_alone() -> None:
    noisy = replace(load_scenario("classic"), noise_rel=0.01)
    a = episode(MicrogridEnv("microgrid-6", disturbance="episode", scenario=noisy), 3, steps=3)
    b = episode(MicrogridEnv("microgrid-6", disturbance="episode"), 3, steps=3)
    rel = np.array(a["measured_q"]) / np.array(b["measured_q"]) - 1.0
    assert 0.002 < rel.std() < 0.02 and np.abs(rel).max() < 0.06
    for x, y in zip(a["rewards"], b["rewards"], strict=True):
        np.testing.assert_array_equal(x, y)


# -- reward terms ------------------------------------------------------------------------------------------------
def test_sharing_penalty_on_a_hand_computed_q_vector() -> None:
    path = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=bool)  # agents 0 - 1 - 2
    mix = neighbour_mean_matrix(path)
    n_q = np.array([1e-3, 1e-3, 2e-3])
    q = np.array([10e3, 20e3, 20e3])  # n_Q·Q = 10, 20, 40 V
    # agent 0: |10 - 20| = 10 V; agent 1: |20 - (10 + 40)/2| = 5 V; agent 2: |40 - 20| = 20 V
    np.testing.assert_allclose(sharing_error_pu(n_q * q, mix, 480.0), np.array([10, 5, 20]) / 480.0, rtol=1e-12)
    assert sharing_error_pu(np.array([0.0, 0.0, 480.0]), mix, 480.0)[2] == SHARING_CAP_PU
    # in the environment: voltage reward minus the weight times that error, from the step's own Q
    env = MicrogridEnv("microgrid-6", disturbance="episode", scenario="sharing")
    out = episode(env, 2000, steps=2)
    info, rewards = out["info"][1], out["rewards"][1]
    droop_v = SYSTEM.dg_params[:, DG_COL["n_q"]] * info["q_var"]
    mean_nb = np.array([droop_v[np.flatnonzero(SYSTEM.agent_adjacency[i])].mean() for i in range(6)])
    by_hand = voltage_reward(info["v_pu"]) - 1.0 * np.abs(droop_v - mean_nb) / 480.0
    np.testing.assert_allclose(rewards, by_hand, rtol=1e-6, atol=1e-7)


def test_each_load_bus_counts_for_its_electrically_nearest_dg() -> None:
    # microgrid-6: load 1 at b4 is next to DG 4 (b5), loads 2 and 3 at b7 and b9 are DG 6's (at b7), load 4 at
    # b11 is DG 5's (b13), by the line impedances of docs/pgsim.md
    expected = np.zeros((6, 4))
    expected[3, 0] = expected[5, 1] = expected[5, 2] = expected[4, 3] = 1.0
    np.testing.assert_array_equal(loadbus_assignment(SYSTEM, 1), expected)
    assert (loadbus_assignment(SYSTEM, 2).sum(axis=0) == 2).all()
    env = MicrogridEnv("microgrid-6", disturbance="episode", scenario="loadbus")
    out = episode(env, 2000, steps=1)
    info, rewards = out["info"][0], out["rewards"][0]
    vl = voltage_reward(info["v_load_pu"])
    extra = np.array([0, 0, 0, vl[0], vl[3], (vl[1] + vl[2]) / 2])
    np.testing.assert_allclose(rewards, voltage_reward(info["v_pu"]) + extra, rtol=1e-6, atol=1e-7)
    assert np.all((info["v_load_pu"] > 0.85) & (info["v_load_pu"] < 1.0))


def test_the_secondary_controller_shares_reactive_power_in_sharing_scenarios() -> None:
    plain = make_controller("secondary", SYSTEM)
    sharing = make_controller("secondary", SYSTEM, scenario=load_scenario("sharing"))
    n_q = SYSTEM.dg_params[:, DG_COL["n_q"]]
    q = np.array([[80e3, 80e3, 80e3, 80e3, 80e3, 100e3]])
    zeros = np.zeros((1, 6))
    meas = Measurements(v_pu=np.ones((1, 6)), f_hz=zeros, p_w=zeros, q_var=q, delta_rad=zeros,
                        io_dq_a=np.zeros((1, 6, 2)), io_DQ_a=np.zeros((1, 6, 2)), vb_DQ_v=np.zeros((1, 6, 2)))
    vn = np.full((1, 6), 520.0)
    np.testing.assert_allclose(plain.setpoints(meas, vn), vn)  # every voltage at 1: nothing to do
    lap = np.diag(SYSTEM.agent_adjacency.sum(axis=1)) - SYSTEM.agent_adjacency
    by_hand = vn - SHARING_GAIN_PER_S * SYSTEM.control_dt_s * (lap @ (n_q * q[0]))
    np.testing.assert_allclose(sharing.setpoints(meas, vn), by_hand, rtol=1e-12)
    assert sharing.setpoints(meas, vn)[0, 5] < 520.0  # DG 6 carries more than its share: it backs off


def test_reward_bounds_cover_the_extra_terms_and_the_run_bounds_use_them() -> None:
    assert reward_bounds() == pytest.approx((-10.0, 0.05))
    low, high = reward_bounds(sharing_weight=2.0, loadbus_weight=1.0)
    assert low == pytest.approx(-10.0 - 10.0 - 2.0 * SHARING_CAP_PU) and high == pytest.approx(0.1)
    classic = run_bounds(load_config(None))
    sharing = run_bounds(load_config(None, ["env.scenario=sharing"]))
    loadbus = run_bounds(load_config(None, ["env.scenario=loadbus"]))
    assert sharing.arrays["rewards"][0] < classic.arrays["rewards"][0] - 0.25
    assert loadbus.arrays["rewards"][0] < -19.9 and loadbus.arrays["rewards"][1] > 0.1
    # every reward a sharing episode hands out lies inside its run's bounds
    env = MicrogridEnv("microgrid-6", disturbance="walk", scenario="sharing")
    out = episode(env, 7, steps=20, action=0)
    lo, hi = sharing.arrays["rewards"]
    assert all(np.all((r >= lo) & (r <= hi)) for r in out["rewards"])


# -- the gap tool's pieces -----------------------------------------------------------------------------------------
def test_the_fitted_local_rule_at_gain_1_offset_0_is_the_local_rule() -> None:
    env = VecMicrogridEnv("microgrid-6", 2, disturbance="episode", auto_reset=False)
    env.reset(0, episode_seeds=[2000, 2000])
    meas, vn = env.measured(), env.grid.vn_v.copy()
    np.testing.assert_array_equal(meas.q_var[0], meas.q_var[1])  # both envs run seed 2000
    local = make_controller("local", SYSTEM).setpoints(meas, vn)
    np.testing.assert_array_equal(LocalRule(SYSTEM, np.ones(6), np.zeros(6)).setpoints(meas, vn), local)
    assert information_gap({"droop": -10.0, "local": 4.0, "per-dg-fit": 5.0, "local-fit": 4.5, "oracle": 6.0}) == {
        "best_local": "per-dg-fit", "range": 16.0, "gap": 1.0 / 16.0}


def test_a_scenario_delay_longer_than_the_warm_up_is_refused() -> None:
    with pytest.raises(InputError, match="warm-up"):
        VecMicrogridEnv("microgrid-6", 1, scenario=Scenario(name="x", delay_steps=9))


def test_a_run_trains_on_its_scenario_and_evaluates_on_another(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "-c", "configs/ia2c.toml", "--steps", "40", "--out", str(run),
                                       "--progress", "off", "--set", "env.scenario=paper"])
    assert result.exit_code == 0, result.output
    assert load_config(run / "config.toml").env.scenario == "paper"
    for extra in ([], ["--scenario", "classic"]):
        result = CliRunner().invoke(main, ["evaluate", "--run", str(run), "--episodes", "1", *extra])
        assert result.exit_code == 0, result.output
    own = json.loads((run / "eval" / "summary.json").read_text())
    other = json.loads((run / "eval-classic" / "summary.json").read_text())
    assert (own["scenario"], other["scenario"]) == ("paper", "classic") and own["seeds"] == other["seeds"]
    assert own["mean_return"] != other["mean_return"]  # same policy and seeds, other loads
