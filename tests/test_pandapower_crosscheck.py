"""An independent check of PGSim's network physics: the droop steady state of every shipped episode system,
solved again as a power flow by pandapower, gives the same bus and DG-terminal voltages.

PGSim's DG voltage, P and Q are at the inverter output, behind the coupling impedance, so each DG gets its
own terminal bus and an R-L branch to its grid bus. DG 1's terminal is the slack (its voltage and angle from
PGSim); every other DG injects the P and Q PGSim measured. Loads are constant impedances (pandapower shunts),
and every reactance is taken at the steady-state frequency PGSim reached. pandapower is a test dependency;
training never imports it.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandapower as pp  # the test extra (setup.cfg)
import pytest

from simsvc.simulator import GridBatch
from simsvc.systems import DG_COL, System, load_system

SETTLE_S = 20.0  # droop alone from rest: every transient has died out to round-off
# The feeder systems (docs/feeders.md) restore their frequency slowly (tens of seconds on 159 DGs), so they are
# checked without secondary frequency control: droop alone settles to 1e-11 p.u. within 2.5 s, at ~59.2 Hz.
FEEDERS = ("oberrhein-50", "oberrhein-95", "oberrhein-159")
FEEDER_SETTLE_S = 3.0


def droop_steady_state(system: System, settle_s: float = SETTLE_S) -> GridBatch:
    grid = GridBatch(system, 1)
    steps = grid.steps_for(system.control_dt_s)
    for _ in range(round(settle_s / system.control_dt_s)):
        grid.advance(steps)
    return grid


def pandapower_net(system: System, grid: GridBatch, coupling: bool = True):
    """The grid as a pandapower net, fed with PGSim's DG injections; returns (net, grid buses, DG terminals)."""
    m = grid.measure()
    omega = 2.0 * np.pi * float(m.f_hz[0, 0])
    vn_kv = system.v_nom_v / 1e3
    net = pp.create_empty_network(sn_mva=1.0, f_hz=omega / (2.0 * np.pi))
    buses = [pp.create_bus(net, vn_kv=vn_kv, name=name) for name in system.bus_names]
    terminals = [pp.create_bus(net, vn_kv=vn_kv, name=f"dg{i + 1}") for i in range(system.n_dg)] if coupling \
        else [buses[b] for b in system.dg_bus]

    def branch(a: int, b: int, r_ohm: float, l_h: float) -> None:
        pp.create_line_from_parameters(net, a, b, length_km=1.0, r_ohm_per_km=r_ohm, x_ohm_per_km=omega * l_h,
                                       c_nf_per_km=0.0, max_i_ka=1e3)

    for f, t, r, ell in zip(system.line_from, system.line_to, system.line_r_ohm, system.line_l_h, strict=True):
        branch(buses[f], buses[t], r, ell)
    if coupling:
        for i in range(system.n_dg):
            branch(terminals[i], buses[system.dg_bus[i]], system.dg_params[i, DG_COL["r_c"]],
                   system.dg_params[i, DG_COL["l_c"]])
    for b, r, ell in zip(system.load_bus, system.load_r_ohm * grid.load_factor[0],
                         system.load_l_h * grid.load_factor[0], strict=True):
        z2 = r * r + (omega * ell) ** 2  # a constant impedance: the power it draws at 1 p.u.
        pp.create_shunt(net, buses[b], p_mw=vn_kv**2 * r / z2, q_mvar=vn_kv**2 * omega * ell / z2)
    v_terminal = grid.vn_v[0] - system.dg_params[:, DG_COL["n_q"]] * m.q_var[0]  # reduced model: v_oq = 0
    pp.create_ext_grid(net, terminals[0], vm_pu=v_terminal[0] / system.v_nom_v,
                       va_degree=float(np.degrees(m.delta_rad[0, 0])))
    for i in range(1, system.n_dg):
        pp.create_sgen(net, terminals[i], p_mw=m.p_w[0, i] / 1e6, q_mvar=m.q_var[0, i] / 1e6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, tolerance_mva=1e-12, max_iteration=50)
    return net, buses, terminals, v_terminal


@pytest.mark.parametrize("name", ["microgrid-6", "microgrid-20", *FEEDERS])
def test_pandapower_gives_pgsims_droop_steady_state_voltages(name):
    system = load_system(name)
    if name in FEEDERS:
        system = dataclasses.replace(system, sec_f_enabled=False)
        grid = droop_steady_state(system, FEEDER_SETTLE_S)
        assert abs(grid.measure().f_hz[0, 0] - system.frequency_hz) > 0.1   # the check runs off 60 Hz
    else:
        grid = droop_steady_state(system)
    net, buses, terminals, v_terminal = pandapower_net(system, grid)
    vb = grid.bus_voltages_dq()[0]
    vm = net.res_bus.vm_pu.values
    np.testing.assert_allclose(vm[buses], np.hypot(vb[:, 0], vb[:, 1]) / system.v_nom_v, rtol=0, atol=1e-9)
    np.testing.assert_allclose(vm[terminals], v_terminal / system.v_nom_v, rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.radians(net.res_bus.va_degree.values[buses]), np.arctan2(vb[:, 1], vb[:, 0]),
                               rtol=0, atol=1e-8)
    # the slack supplies what PGSim's DG 1 supplies: the power balance closes (to 1e-8 of DG 1's power, or
    # of the total where the slack absorbs the round-off of 150 injections)
    m = grid.measure()
    p_all, q_all = 1e-8 * np.abs(m.p_w[0]).sum(), 1e-8 * np.abs(m.q_var[0]).sum()
    assert net.res_ext_grid.p_mw.values[0] * 1e6 == pytest.approx(m.p_w[0, 0], rel=1e-8, abs=p_all)
    assert net.res_ext_grid.q_mvar.values[0] * 1e6 == pytest.approx(m.q_var[0, 0], rel=1e-8, abs=q_all)


def test_the_crosscheck_sees_a_missing_coupling_impedance():
    # negative control: DGs connected straight to their buses (no R_c, L_c) disagree by far more than 1e-9
    system = load_system("microgrid-6")
    grid = droop_steady_state(system)
    net, buses, _, _ = pandapower_net(system, grid, coupling=False)
    vb = grid.bus_voltages_dq()[0]
    gap = np.abs(net.res_bus.vm_pu.values[buses] - np.hypot(vb[:, 0], vb[:, 1]) / system.v_nom_v).max()
    assert gap > 1e-4
