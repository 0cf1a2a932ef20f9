"""System files are data: shipped ones load, user files work, malformed ones name the file and entry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.errors import InputError
from simsvc.env import VecMicrogridEnv
from simsvc.obs_stats import droop_observation_stats
from simsvc.systems import SYSTEMS_DIR, available_systems, load_system

MG6 = (SYSTEMS_DIR / "microgrid-6.toml").read_text()


def test_shipped_systems_load_with_their_sizes():
    assert {"microgrid-6", "microgrid-20", "bidram-4"} <= set(available_systems())
    sizes = {name: (s.n_dg, s.n_bus, s.n_line, s.n_load) for name in ("microgrid-6", "microgrid-20", "bidram-4")
             for s in [load_system(name)]}
    assert sizes == {"microgrid-6": (6, 11, 10, 4), "microgrid-20": (20, 20, 20, 10), "bidram-4": (4, 4, 3, 2)}


def test_microgrid20_connects_each_load_to_its_own_bus():
    s = load_system("microgrid-20")
    buses = [s.bus_names[b] for b in s.load_bus]
    assert buses == ["b1", "b7", "b3", "b9", "b5", "b11", "b17", "b13", "b19", "b15"]


def test_reactances_become_inductances_at_the_system_frequency():
    s = load_system("bidram-4")
    np.testing.assert_allclose(s.line_l_h[1] * 2 * np.pi * 50.0, 0.58)


def test_user_system_file_from_a_path_runs(tmp_path: Path):
    path = tmp_path / "my-grid.toml"
    path.write_text(MG6.replace('name = "microgrid-6"', 'name = "my-grid"').replace("r_ohm = 1.5", "r_ohm = 1.6"))
    env = VecMicrogridEnv(str(path), 1, disturbance="none")
    obs = env.reset(0)
    assert env.system.name == "my-grid" and obs.shape == (1, 6, 9)


@pytest.mark.parametrize("edit, message", [
    (('to_bus = "b2"\nr_ohm = 0.00637', 'to_bus = "b99"\nr_ohm = 0.00637'), "line[0].to_bus: unknown bus 'b99'"),
    (("m_p = 5.64e-5", "m_p = -1.0"), "dg[0].m_p: must be > 0"),
    (("x_ohm = 1.0", 'x_ohm = "one"'), "load[0].x_ohm: expected a finite number"),
    (("[agents]", "[agentz]"), "agentz: unknown key"),
    (("edges = [[1, 2]", "edges = [[1, 7]"), "agents.edges[0]"),
    (('inner_loop = "type2"', 'inner_loop = "type9"'), "dg[2].inner_loop: must be one of type1, type2"),
    (("control_dt_s = 0.05", "control_dt_s = 0.05\nspeed = 3"), "control.speed: unknown key"),
    (("[[bus]]\nname = \"b14\"", "[[bus]]\nname = \"b14\"\n[[bus]]\nname = \"b99\""), "bus 'b99': is not connected"),
    (("name = \"microgrid-6\"", "name = \"microgrid-6\"\nname2 = ["), "not valid TOML"),
])
def test_malformed_system_file_names_the_file_and_the_bad_entry(tmp_path: Path, edit, message):
    old, new = edit
    assert old in MG6
    path = tmp_path / "broken.toml"
    path.write_text(MG6.replace(old, new, 1))
    with pytest.raises(InputError) as err:
        load_system(str(path))
    assert str(err.value).split(": ")[0].endswith("broken.toml")
    assert message in str(err.value)


def test_unknown_system_name_lists_the_choices():
    with pytest.raises(InputError, match="microgrid-6"):
        load_system("microgrid-7")


@pytest.mark.parametrize("name", ["microgrid-6", "microgrid-20"])
def test_stored_observation_statistics_match_droop_only_episodes(name):
    system = load_system(name)
    mean, std = droop_observation_stats(system, episodes=4, seed=123)
    # A different sample of episodes: the stored statistics must describe it to a fraction of a std.
    assert np.all(np.abs(mean - system.obs_mean) < 0.5 * system.obs_std)
    assert np.all((std > 0.3 * system.obs_std) & (std < 3.0 * system.obs_std))
