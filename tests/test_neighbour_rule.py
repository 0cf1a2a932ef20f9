"""The neighbour rule of the gap table (docs/scenarios.md#a-rule-that-reads-its-neighbours): a DG whose sensor has
failed runs the fitted local rule on its working neighbours' n_Q·Q, over the links that arrived; checked on a
hand-made measurement of microgrid-6. Also its share of the gap, its fit, and `powernet gap --reuse`."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from launch.cli import main
from simsvc.controllers import controller_setpoints
from simsvc.gap import LocalRule, NeighbourRule, information_gap, measure_gap
from simsvc.links import neighbour_slots
from simsvc.scenarios import load_scenario
from simsvc.systems import DG_COL, load_system

SYSTEM = load_system("microgrid-6")  # DG 2's neighbours are DGs 0, 1 and 4 (slots 0, 1, 2)
N_Q = SYSTEM.dg_params[:, DG_COL["n_q"]]


def measurement(droop_v: list[float]) -> SimpleNamespace:
    """Measured Q (var) [1, 6] whose n_Q·Q are `droop_v` (V); NaN marks a failed sensor."""
    return SimpleNamespace(q_var=np.asarray([droop_v], dtype=np.float64) / N_Q)


def rule(cls: type[LocalRule] = NeighbourRule) -> LocalRule:
    return cls(SYSTEM, np.ones(6), np.zeros(6), np.full(6, 530.0))


def test_a_failed_dg_runs_the_rule_on_the_mean_of_its_working_neighbours() -> None:
    meas = measurement([20.0, np.nan, np.nan, 25.0, 40.0, 35.0])  # DGs 1 and 2 have failed
    held = np.full((1, 6), 500.0)
    got = rule().setpoints(meas, held)[0]
    # DG 2 hears DGs 0 and 4 (DG 1 has failed): (20 + 40) / 2 = 30 V -> 480 + 30 = 510 V;
    # DG 1 hears DGs 0 and 3 (DG 2 has failed): (20 + 25) / 2 = 22.5 V -> 502.5 V, snapped to 500 or 505
    assert got[2] == 510.0 and got[1] in (500.0, 505.0)
    local = rule(LocalRule).setpoints(meas, held)[0]
    np.testing.assert_array_equal(got[[0, 3, 4, 5]], local[[0, 3, 4, 5]])  # a working DG reads only its own Q
    np.testing.assert_array_equal(local[[1, 2]], [530.0, 530.0])  # the local rule holds its fallback there
    # a DG that is not DG 2's neighbour does not reach it
    np.testing.assert_array_equal(rule().setpoints(measurement([20.0, np.nan, np.nan, 5.0, 40.0, -50.0]), held)[0][2],
                                  510.0)


def test_a_lost_message_leaves_the_mean_and_with_none_heard_the_dg_holds_its_fallback() -> None:
    meas = measurement([20.0, np.nan, np.nan, 25.0, 40.0, 35.0])
    links = np.broadcast_to(neighbour_slots(SYSTEM.agent_adjacency), (1, 6, 3)).copy()
    links[0, 2, 2] = False  # DG 2 loses DG 4's message: it hears DG 0 alone, 20 V -> 500 V
    ctrl = rule()
    assert controller_setpoints(ctrl, meas, np.full((1, 6), 500.0), links)[0, 2] == 500.0
    links[0, 2, 0] = False  # ... and DG 0's: no working neighbour heard
    assert controller_setpoints(ctrl, meas, np.full((1, 6), 500.0), links)[0, 2] == 530.0


def test_the_neighbour_rules_share_of_the_gap() -> None:
    returns = {"droop": -2.0, "local": 2.0, "per-dg-fit": 4.0, "local-fit": 4.5, "neighbour-fit": 5.0, "oracle": 5.5}
    got = information_gap(returns)
    assert got["best_local"] == "local-fit" and got["neighbour_share"] == pytest.approx(0.5)
    assert got["gap"] == pytest.approx(1.0 / 7.5)
    assert "neighbour_share" not in information_gap({k: v for k, v in returns.items() if k != "neighbour-fit"})


def test_the_fit_starts_from_the_local_fit_and_runs_only_with_sensor_faults() -> None:
    small = {"eval_seeds": [2000], "train_seeds": [0], "fit_sweeps": 1, "say": lambda _: None}
    names = ("droop", "local-fit", "neighbour-fit", "oracle")
    result = measure_gap(SYSTEM, load_scenario("sensoroutage"), controllers=names, **small)
    fit, start = result["fitted"]["neighbour-fit"], result["fitted"]["local-fit"]
    assert set(fit) == {"gain", "offset_v", "fallback_v", "train_return"}
    assert fit["train_return"] >= start["train_return"] - 1e-9  # a search from the local fit keeps or betters it
    assert set(result["controllers"]) == set(names)
    assert "neighbour-fit" not in measure_gap(SYSTEM, load_scenario("classic"), controllers=("droop", "local-fit",
                                                                                               "neighbour-fit"),
                                              **small)["controllers"]


def test_gap_reuse_keeps_earlier_fits_and_rows_and_refuses_other_seeds(tmp_path: Path) -> None:
    args = ["gap", "--system", "microgrid-6", "--scenario", "sensoroutage", "--episodes", "1", "--train-seeds", "1",
            "--fit-sweeps", "1", "--no-figures"]
    first = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    earlier = json.loads((tmp_path / "a" / "mg6-sensoroutage.json").read_text())
    # pretend the earlier run knew no neighbour rule: the rerun fits and runs it alone
    for part in ("fitted", "controllers"):
        del earlier[part]["neighbour-fit"]
    earlier["controllers"]["droop"]["mean_return"] = -99.0  # a reused row is taken as it stands
    (tmp_path / "a" / "mg6-sensoroutage.json").write_text(json.dumps(earlier))
    second = CliRunner().invoke(main, [*args, "--reuse", str(tmp_path / "a"), "--out", str(tmp_path / "b")])
    assert second.exit_code == 0, second.output
    assert "(reused)" in second.output and "neighbour-fit fitted" in second.output
    again = json.loads((tmp_path / "b" / "mg6-sensoroutage.json").read_text())
    assert again["controllers"]["droop"]["mean_return"] == -99.0 and "neighbour-fit" in again["controllers"]
    assert again["fitted"]["local-fit"] == earlier["fitted"]["local-fit"]
    assert again["reused"]["from"].endswith("mg6-sensoroutage.json")
    other = CliRunner().invoke(main, [*args[:-1], "--episodes", "2", "--reuse", str(tmp_path / "a"), "--no-figures",
                                      "--out", str(tmp_path / "c")])
    assert other.exit_code == 2 and "measured other eval_seeds" in other.output
