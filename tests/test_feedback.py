"""`powernet feedback` (launch/feedback.py): the line fit, the droop inputs a working and a failed DG have, and
the command on a briefly trained run of a sensor-fault scenario."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from launch.cli import main
from launch.feedback import PROBES, droop_inputs, heard_hidden, line_fit, probe_r2
from simsvc.scenarios import load_scenario
from simsvc.systems import DG_COL, load_system

SYSTEM = load_system("microgrid-6")  # DG 2's neighbours are DGs 0, 1 and 4


def test_line_fit_recovers_slope_and_r2_and_says_when_it_cannot() -> None:
    x = np.linspace(-10.0, 10.0, 21)
    fit = line_fit(x, 0.5 * x + 3.0)
    assert fit["slope"] == pytest.approx(0.5) and fit["r2"] == pytest.approx(1.0) and fit["n"] == 21
    flat = line_fit(x, np.full_like(x, 5.0))  # one set-point whatever the input: slope 0, nothing explained
    assert flat["slope"] == pytest.approx(0.0, abs=1e-12) and flat["r2"] == 0.0
    noisy = line_fit(x, x + np.random.default_rng(0).normal(0.0, 5.0, x.shape))
    assert 0.0 < noisy["r2"] < 0.9
    assert line_fit(np.array([1.0, np.nan, 2.0]), np.array([1.0, 2.0, np.nan])) == {"slope": None, "r2": None, "n": 1}
    assert line_fit(np.ones(5), np.arange(5.0))["slope"] is None  # x does not vary


def test_a_working_dg_has_its_own_term_and_a_failed_dg_its_working_neighbours_mean() -> None:
    n_q = SYSTEM.dg_params[:, DG_COL["n_q"]]
    droop_v = np.array([[20.0, np.nan, np.nan, 25.0, 40.0, 35.0]])
    own, heard = droop_inputs(SYSTEM, SimpleNamespace(q_var=droop_v / n_q), None)
    np.testing.assert_allclose(own, droop_v)
    assert np.isnan(heard[0, [0, 3, 4, 5]]).all()
    assert heard[0, 2] == pytest.approx(30.0) and heard[0, 1] == pytest.approx(22.5)  # (20 + 40) / 2, (20 + 25) / 2


def test_the_probe_scores_what_varies_between_episodes_not_what_every_episode_shares() -> None:
    rng = np.random.default_rng(0)
    episodes, steps = 40, 10
    load = rng.normal(size=episodes)  # one number per episode, e.g. its load level
    pattern = np.linspace(-3.0, 3.0, steps)  # what every episode shares at each control step
    ep, step = np.meshgrid(np.arange(episodes), np.arange(steps), indexing="ij")
    y = (pattern[step] + load[ep]).ravel()
    train, cell = (ep % 2 == 0).ravel(), step.ravel()
    knows_load = np.stack([load[ep].ravel(), rng.normal(size=y.size)], axis=1)
    counts_steps = np.eye(steps)[cell]  # a state that only counts steps explains the pattern, not the load
    assert probe_r2(knows_load, y, train, cell)["r2"] > 0.95  # the ridge shrinks the fit a little
    assert probe_r2(counts_steps, y, train, cell)["r2"] < 0.05
    assert probe_r2(rng.normal(size=(y.size, 3)), y, train, cell)["r2"] < 0.1
    short = probe_r2(knows_load[:15], y[:15], train[:15], cell[:15])
    assert short["r2"] is None and short["n_fit"] + short["n_test"] == 15


def test_heard_hidden_is_the_mean_state_of_the_working_neighbours_heard() -> None:
    graph = SYSTEM.agent_adjacency  # DG 2's neighbours are DGs 0, 1 and 4
    h = np.arange(12.0).reshape(6, 2)
    failed = np.array([False, True, True, False, False, False])
    heard = heard_hidden(h, failed, graph, None)
    np.testing.assert_allclose(heard[2], (h[0] + h[4]) / 2)  # DG 1 has failed: its state is not heard
    assert np.isnan(heard[~failed]).all()
    links = np.ones((1, 6, graph.sum(axis=1).max()), dtype=bool)
    links[0, 2, 0] = False  # DG 2 loses its first neighbour's (DG 0's) message
    np.testing.assert_allclose(heard_hidden(h, failed, graph, links)[2], h[4])


def test_the_command_fits_every_agent_step_of_a_trained_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    trained = CliRunner().invoke(main, ["train", "-c", "configs/powernet.toml", "--steps", "40", "--out", str(run),
                                        "--progress", "off", "--set", "env.scenario=sensoroutage"])
    assert trained.exit_code == 0, trained.output
    out = tmp_path / "fb.json"
    result = CliRunner().invoke(main, ["feedback", "--run", str(run), "--episodes", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    row = json.loads(out.read_text())["runs"][0]
    failed = load_scenario("sensoroutage").fault_count(6)
    assert (row["algorithm"], row["scenario"]) == ("powernet", "sensoroutage")
    assert row["own"]["n"] == 2 * 20 * (6 - failed)  # every working DG's agent-step of both episodes
    assert 0 < row["heard"]["n"] <= 2 * 20 * failed  # failed DGs that heard a working neighbour
    assert np.isfinite(row["mean_return"])
    assert set(row["probe_r2"]) == set(PROBES)
    # the first episode fits, the second tests, on the (DG, step) cells the first one has
    working = row["probe_r2"]["working_own_h"]
    assert working["n_fit"] == 20 * (6 - failed) and working["n_test"] <= 20 * (6 - failed)
    bad = CliRunner().invoke(main, ["feedback", "--run", str(run), "--scenario", "nosuch", "--out", str(out)])
    assert bad.exit_code == 2 and "nosuch" in bad.output


def test_a_probe_on_units_that_do_not_vary_explains_nothing_and_does_not_blow_up() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=200)
    train, cell = np.arange(200) % 2 == 0, np.zeros(200, dtype=int)
    saturated = np.ones((200, 4)) + 1e-7 * rng.normal(size=(200, 4))  # rounding noise on a constant
    for x in (saturated, np.ones((200, 4))):
        r2 = probe_r2(x, y, train, cell)["r2"]
        assert -0.05 < r2 <= 0.0
