"""The `[sensor_fault]` switch of scenarios (docs/scenarios.md#sensor-faults): which DGs lose their
measurement (seeded, apart from the loads), what a failed DG observes and what a controller reads from it, and
that the baselines of the gap tool do not read a failed sensor. Deterministic and fast (microgrid-6)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from common.errors import InputError
from simsvc import gap
from simsvc.controllers import make_controller
from simsvc.env import FAULT_FILL, MicrogridEnv, VecMicrogridEnv
from simsvc.gap import FAULT_GAINS, FAULT_OFFSETS_V, LocalRule
from simsvc.scenario_effects import FAULT_STREAM, fault_set
from simsvc.scenarios import load_scenario, parse_scenario
from simsvc.simulator import Measurements
from simsvc.systems import DG_COL, load_system, setpoint_choices

SYSTEM = load_system("microgrid-6")
FAULTY = replace(load_scenario("classic"), name="faulty", fault_share=1 / 3)


def test_the_share_is_read_checked_and_rounded_to_a_count() -> None:
    assert parse_scenario({"sensor_fault": {"share": 0.34}}).fault_share == 0.34
    for doc, message in (({"sensor_fault": {"share": 1.5}}, "sensor_fault.share: must be <= 1"),
                         ({"sensor_fault": {"share": -0.1}}, "sensor_fault.share: must be >= 0"),
                         ({"sensor_fault": {"count": 2}}, "sensor_fault.count: unknown key"),
                         ({"sensor_fault": {"share": "a third"}}, "sensor_fault.share: expected a finite number")):
        with pytest.raises(InputError, match="^f.toml: " + message):
            parse_scenario(doc, "f.toml")
    assert [FAULTY.fault_count(n) for n in (6, 20, 1)] == [2, 7, 1]
    assert replace(FAULTY, fault_share=0.01).fault_count(6) == 1 and load_scenario("classic").fault_count(6) == 0
    assert replace(FAULTY, fault_share=1.0).fault_count(6) == 6


def test_the_failed_dgs_come_from_the_seeds_own_stream_and_leave_the_loads_alone() -> None:
    by_hand = np.zeros(6, dtype=bool)
    rng = np.random.default_rng(np.random.SeedSequence(17, spawn_key=(FAULT_STREAM,)))
    by_hand[rng.choice(6, size=2, replace=False)] = True
    np.testing.assert_array_equal(fault_set(17, 6, 2), by_hand)
    env = VecMicrogridEnv("microgrid-6", 3, disturbance="episode", scenario=FAULTY)
    env.reset(0, episode_seeds=[17, 18, 17])
    np.testing.assert_array_equal(env.sensor_fault[0], by_hand)
    np.testing.assert_array_equal(env.sensor_fault[2], by_hand)
    assert env.sensor_fault.sum(axis=1).tolist() == [2, 2, 2]
    assert len({tuple(fault_set(s, 6, 2)) for s in range(40)}) > 5  # different episodes, different DGs
    plain = VecMicrogridEnv("microgrid-6", 3, disturbance="episode")
    plain.reset(0, episode_seeds=[17, 18, 17])
    np.testing.assert_array_equal(env.grid.load_factor, plain.grid.load_factor)


def test_a_failed_dg_observes_the_fill_and_reads_nan_while_the_physics_and_reward_go_on() -> None:
    faulty = MicrogridEnv("microgrid-6", disturbance="episode", scenario=FAULTY)
    plain = MicrogridEnv("microgrid-6", disturbance="episode")
    obs_f, obs_p = faulty.reset(2000), plain.reset(2000)
    failed = faulty.vec.sensor_fault[0]
    for _ in range(3):
        assert np.all(obs_f[failed] == FAULT_FILL) and obs_f.dtype == np.float32
        np.testing.assert_array_equal(obs_f[~failed], obs_p[~failed])
        meas = faulty.vec.measured()
        for name in ("v_pu", "q_var", "p_w", "f_hz", "delta_rad", "io_dq_a", "io_DQ_a", "vb_DQ_v"):
            assert np.isnan(getattr(meas, name)[0][failed]).all(), name
            assert np.isfinite(getattr(meas, name)[0][~failed]).all(), name
        assert np.isfinite(faulty.measure().q_var).all()  # the true state is still there
        obs_f, r_f, _, info_f = faulty.step(np.full(6, 6))
        obs_p, r_p, _, info_p = plain.step(np.full(6, 6))
        np.testing.assert_array_equal(r_f, r_p)  # the reward reads the true voltages
        np.testing.assert_array_equal(info_f["v_pu"], info_p["v_pu"])
        np.testing.assert_array_equal(info_f["sensor_fault"], failed)


def test_the_local_rules_hold_a_failed_dgs_set_point_or_its_fallback() -> None:
    env = VecMicrogridEnv("microgrid-6", 1, disturbance="episode", scenario=FAULTY, auto_reset=False)
    env.reset(0, episode_seeds=[2000])
    meas, failed = env.measured(), env.sensor_fault[0]
    vn = np.full((1, 6), 505.0)
    n_q = SYSTEM.dg_params[:, DG_COL["n_q"]]
    choices = setpoint_choices(SYSTEM)
    wanted = SYSTEM.v_nom_v + n_q * meas.q_var[0]
    snapped = choices[np.abs(wanted[~failed, None] - choices[None]).argmin(axis=1)]
    local = make_controller("local", SYSTEM).setpoints(meas, vn)[0]
    np.testing.assert_array_equal(local[failed], 505.0)  # no reading: it holds
    np.testing.assert_array_equal(local[~failed], snapped)
    fallback = np.array([490.0, 495.0, 500.0, 525.0, 530.0, 535.0])
    fitted = LocalRule(SYSTEM, np.ones(6), np.zeros(6), fallback).setpoints(meas, vn)[0]
    np.testing.assert_array_equal(fitted[failed], fallback[failed])
    np.testing.assert_array_equal(fitted[~failed], snapped)


def test_the_secondary_controller_hears_a_failed_dgs_voltage_from_its_working_neighbours() -> None:
    sec = make_controller("secondary", SYSTEM)
    zeros = np.zeros((1, 6))
    v = np.array([[0.98, 0.99, np.nan, 1.00, 0.97, 0.96]])
    meas = Measurements(v_pu=v, f_hz=zeros, p_w=zeros, q_var=zeros, delta_rad=zeros, io_dq_a=np.zeros((1, 6, 2)),
                        io_DQ_a=np.zeros((1, 6, 2)), vb_DQ_v=np.zeros((1, 6, 2)))
    vn = np.full((1, 6), 510.0)
    adjacency = SYSTEM.agent_adjacency.astype(float)
    heard = v.copy()
    nb = np.flatnonzero(adjacency[2])
    heard[0, 2] = v[0, nb].mean()  # DG 3's neighbours all measure
    out = sec.setpoints(meas, vn)
    np.testing.assert_allclose(out, sec.setpoints(replace(meas, v_pu=heard), vn), rtol=1e-15)
    assert np.isfinite(out).all()


def test_the_fitted_local_rule_fits_a_fallback_only_where_sensors_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    short = replace(SYSTEM, episode_steps=2)  # a short episode and small grids keep the fit fast
    monkeypatch.setattr(gap, "FAULT_OFFSETS_V", np.array([0.0, 35.0]))
    monkeypatch.setattr(gap, "FAULT_GAINS", np.array([0.0, 1.0]))
    sc = replace(FAULTY, fault_share=0.5)
    with_faults = gap.fit_local_rule(short, sc, [0], sweeps=1, fallback_start_v=np.full(6, 515.0))
    assert len(with_faults["fallback_v"]) == 6 and set(with_faults["fallback_v"]) <= set(setpoint_choices(SYSTEM))
    assert set(with_faults["gain"]) <= {0.0, 1.0} and set(with_faults["offset_v"]) <= {0.0, 35.0}
    monkeypatch.setattr(gap, "LOCAL_OFFSETS_V", np.array([0.0]))
    monkeypatch.setattr(gap, "LOCAL_GAINS", np.array([1.0]))
    assert "fallback_v" not in gap.fit_local_rule(short, load_scenario("classic"), [0], sweeps=1)
    # with faults the family holds every constant set-point: gain 0, offset = set-point - V_nom
    assert 0.0 in FAULT_GAINS and set(setpoint_choices(SYSTEM) - SYSTEM.v_nom_v) <= set(FAULT_OFFSETS_V)
    meas = Measurements(*(np.full((1, 6), 1e4) for _ in range(5)), *(np.zeros((1, 6, 2)) for _ in range(3)))
    constants = np.array([490.0, 495.0, 510.0, 520.0, 530.0, 535.0])
    rule = LocalRule(SYSTEM, np.zeros(6), constants - SYSTEM.v_nom_v, constants)
    np.testing.assert_array_equal(rule.setpoints(meas, np.full((1, 6), 500.0))[0], constants)
