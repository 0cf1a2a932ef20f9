"""The feeder systems (docs/feeders.md): generated from pandapower's MV Oberrhein network byte for byte, they
load, their agent graphs follow the feeder, and droop and the conventional controller run inside bounds."""

from __future__ import annotations

import numpy as np
import pytest

from simsvc.episodes import run_episode
from simsvc.obs_stats import droop_observation_stats
from simsvc.systems import SYSTEMS_DIR, load_system
from simsvc.systems.generate import FEEDER_SYSTEMS, generate, source_network

SIZES = {"oberrhein-50": (50, 69, 68, 61), "oberrhein-95": (95, 108, 107, 86), "oberrhein-159": (159, 178, 177, 147)}


@pytest.fixture(scope="module")
def source():
    return source_network()


def test_every_feeder_system_is_its_regeneration_byte_for_byte(source):
    assert {spec.name for spec in FEEDER_SYSTEMS} == set(SIZES)
    for spec in FEEDER_SYSTEMS:
        assert generate(spec, net=source) == (SYSTEMS_DIR / f"{spec.name}.toml").read_text(), spec.name


def test_a_different_placement_seed_gives_a_different_file(source):
    import dataclasses

    spec = FEEDER_SYSTEMS[0]
    assert generate(dataclasses.replace(spec, seed=spec.seed + 1), net=source) != generate(spec, net=source)


@pytest.mark.parametrize("name", list(SIZES))
def test_feeder_system_loads_with_its_sizes_and_a_connected_feeder_shaped_agent_graph(name):
    s = load_system(name)
    assert (s.n_dg, s.n_bus, s.n_line, s.n_load) == SIZES[name]
    assert len(set(s.dg_bus.tolist())) == s.n_dg                      # one DG per bus
    assert s.n_line == s.n_bus - 1                                      # radial
    adj = s.agent_adjacency
    reached, frontier = {0}, [0]
    while frontier:
        frontier = [j for i in frontier for j in np.flatnonzero(adj[i]) if j not in reached]
        reached.update(frontier)
    assert len(reached) == s.n_dg
    assert 2 <= adj.sum(axis=1).max() <= 5                              # sparse: a few neighbours each


@pytest.mark.parametrize("name", ["oberrhein-50", "oberrhein-159"])
def test_droop_and_the_secondary_controller_stay_inside_physical_bounds(name):
    s = load_system(name)
    droop = run_episode(s, "droop", seed=2000, disturbance="walk")
    secondary = run_episode(s, "secondary", seed=2000, disturbance="walk")
    for run in (droop, secondary):
        assert np.all(np.isfinite(run.v_pu)) and np.all((run.v_pu > 0.9) & (run.v_pu < 1.1))
        f = run.trace["f_hz"]
        assert np.all((f > 59.0) & (f < 60.5))
    # the conventional controller lifts every DG towards 1 p.u.
    assert secondary.summary["max_dev_pu"] < droop.summary["max_dev_pu"]
    assert np.abs(1.0 - secondary.v_pu[-1]).max() < 0.03


def test_stored_observation_statistics_describe_fresh_droop_episodes():
    s = load_system("oberrhein-50")
    mean, std = droop_observation_stats(s, episodes=2, seed=123)
    assert np.all(np.abs(mean - s.obs_mean) < 0.5 * s.obs_std)
    assert np.all((std > 0.3 * s.obs_std) & (std < 3.0 * s.obs_std))
