"""PGSim's equations and their Numba-compiled integrator (docs/pgsim.md: DG model, network, secondary
frequency control, numerics).

Why the bus voltages are eliminated
-----------------------------------
The original PGSim made bus voltages algebraic through a virtual shunt resistor r_N = 10 kΩ:
v_bus = r_N · (net current injected into the bus). Those modes have eigenvalues of 1e7–1e8 s⁻¹, so an
explicit integrator must take ~10 ns steps, and the original had to use LSODA at tight tolerances. We
take the r_N → ∞ limit instead: every branch is an inductor whose current is a state, so Kirchhoff's
current law at bus k, differentiated once, is linear in the bus voltages,

    M v = b,   M[k, k] = Σ_{branches at k} 1/L,   M[k, l] = −Σ_{lines k–l} 1/L,

where b collects the voltage-free parts of the branch derivatives. M is a weighted Laplacian of the lines
plus the 1/L of DG coupling inductors and loads on the diagonal: symmetric positive definite, identical
for the D and Q axes, and it changes only when the loads change (once per control step), so we invert it
then and apply the inverse inside the right-hand side. Every current (DG output currents included) is
stored in the common DQ frame, so KCL is a *linear* invariant of the state and classical Runge–Kutta
preserves it to round-off. What is left has eigenvalues below ~2e3 s⁻¹ (reduced model) or ~1.5e4 s⁻¹
(full model), which a fixed-step RK4 integrates accurately and deterministically (bit-for-bit repeatable
episodes), at a step set per system file and checked against a tight Radau solve of the original r_N
equations in the tests. The shunt draws ~0.01 % of the load current, so both formulations agree closely.

State layout of one environment (float64, SI units)
---------------------------------------------------
[DG blocks: n_dg × ns] [lines: n_line × 2] [loads: n_load × 2] [secondary frequency set-points w: n_dg]
DG block, reduced (ns = 5):  δ, P, Q, i_oD, i_oQ
DG block, full (ns = 13):    δ, P, Q, φ_d, φ_q, γ_d, γ_q, i_ld, i_lq, v_od, v_oq, i_oD, i_oQ
(i_oD, i_oQ are the DG output current in the common frame; the local i_od, i_oq are a rotation by −δ.)
"""

from __future__ import annotations

import numpy as np
from numba import njit

REDUCED = 0
FULL = 1
NS_REDUCED = 5
NS_FULL = 13

# Columns of dg_params (see simsvc.systems.DG_COLUMNS).
MP, NQ, WC, RC, LC, KPV, KIV, KPC, KIC, FF, RF, LF, CF = range(13)


def dg_state_size(model: int) -> int:
    """Number of states per DG block."""
    return NS_FULL if model == FULL else NS_REDUCED


def state_size(model: int, n_dg: int, n_line: int, n_load: int) -> int:
    """Length of one environment's state vector."""
    return n_dg * dg_state_size(model) + 2 * n_line + 2 * n_load + n_dg


@njit(cache=True)
def rhs(x, model, dg_par, dg_bus, vn, line_from, line_to, line_r, line_l, load_bus, load_r, load_l, minv,
        omega_nom, dxdt, vb):
    """Time derivative of one environment's state with the frequency set-points w held (dw/dt = 0).

    Writes dxdt and the bus voltages vb [n_bus, 2] (V, common frame).
    """
    n_dg = dg_bus.shape[0]
    n_line = line_from.shape[0]
    n_load = load_bus.shape[0]
    n_bus = minv.shape[0]
    ns = NS_FULL if model == FULL else NS_REDUCED
    o_line = n_dg * ns
    o_load = o_line + 2 * n_line
    o_w = o_load + 2 * n_load

    omega = np.empty(n_dg)
    for i in range(n_dg):
        omega[i] = x[o_w + i] - dg_par[i, MP] * x[i * ns + 1]
    omega_com = omega[0]

    # Voltage-free part of every branch derivative, accumulated into the KCL right-hand side b.
    b = np.zeros((n_bus, 2))
    vo = np.empty((n_dg, 2))
    for i in range(n_dg):
        s = i * ns
        c = np.cos(x[s])
        sn = np.sin(x[s])
        if model == FULL:
            vd = x[s + 9]
            vq = x[s + 10]
            cross = omega_com  # ω_i in the local frame is ω_com once rotated to the common frame
        else:
            vd = vn[i] - dg_par[i, NQ] * x[s + 2]
            vq = 0.0
            cross = 2.0 * omega_com - omega[i]  # the original's ω_com in the local frame, rotated
        vo[i, 0] = c * vd - sn * vq
        vo[i, 1] = sn * vd + c * vq
        ra = dg_par[i, RC] / dg_par[i, LC]
        iD = x[s + ns - 2]
        iQ = x[s + ns - 1]
        aD = -ra * iD + cross * iQ + vo[i, 0] / dg_par[i, LC]
        aQ = -ra * iQ - cross * iD + vo[i, 1] / dg_par[i, LC]
        dxdt[s + ns - 2] = aD
        dxdt[s + ns - 1] = aQ
        k = dg_bus[i]
        b[k, 0] += aD
        b[k, 1] += aQ
    for j in range(n_line):
        s = o_line + 2 * j
        ra = line_r[j] / line_l[j]
        aD = -ra * x[s] + omega_com * x[s + 1]
        aQ = -ra * x[s + 1] - omega_com * x[s]
        dxdt[s] = aD
        dxdt[s + 1] = aQ
        b[line_from[j], 0] -= aD
        b[line_from[j], 1] -= aQ
        b[line_to[j], 0] += aD
        b[line_to[j], 1] += aQ
    for j in range(n_load):
        s = o_load + 2 * j
        ra = load_r[j] / load_l[j]
        aD = -ra * x[s] + omega_com * x[s + 1]
        aQ = -ra * x[s + 1] - omega_com * x[s]
        dxdt[s] = aD
        dxdt[s + 1] = aQ
        b[load_bus[j], 0] -= aD
        b[load_bus[j], 1] -= aQ

    for k in range(n_bus):
        accD = 0.0
        accQ = 0.0
        for m in range(n_bus):
            accD += minv[k, m] * b[m, 0]
            accQ += minv[k, m] * b[m, 1]
        vb[k, 0] = accD
        vb[k, 1] = accQ

    # Branch derivatives: add the bus-voltage terms.
    for i in range(n_dg):
        s = i * ns
        k = dg_bus[i]
        dxdt[s + ns - 2] -= vb[k, 0] / dg_par[i, LC]
        dxdt[s + ns - 1] -= vb[k, 1] / dg_par[i, LC]
    for j in range(n_line):
        s = o_line + 2 * j
        dxdt[s] += (vb[line_from[j], 0] - vb[line_to[j], 0]) / line_l[j]
        dxdt[s + 1] += (vb[line_from[j], 1] - vb[line_to[j], 1]) / line_l[j]
    for j in range(n_load):
        s = o_load + 2 * j
        dxdt[s] += vb[load_bus[j], 0] / load_l[j]
        dxdt[s + 1] += vb[load_bus[j], 1] / load_l[j]

    # DG internal states.
    for i in range(n_dg):
        s = i * ns
        iD = x[s + ns - 2]
        iQ = x[s + ns - 1]
        p_inst = vo[i, 0] * iD + vo[i, 1] * iQ
        q_inst = vo[i, 1] * iD - vo[i, 0] * iQ
        wc = dg_par[i, WC]
        dxdt[s] = omega[i] - omega_com
        dxdt[s + 1] = wc * (p_inst - x[s + 1])
        dxdt[s + 2] = wc * (q_inst - x[s + 2])
        if model == FULL:
            c = np.cos(x[s])
            sn = np.sin(x[s])
            iod = c * iD + sn * iQ
            ioq = -sn * iD + c * iQ
            vod = x[s + 9]
            voq = x[s + 10]
            ild = x[s + 7]
            ilq = x[s + 8]
            cf = dg_par[i, CF]
            lf = dg_par[i, LF]
            ev_d = vn[i] - dg_par[i, NQ] * x[s + 2] - vod
            ev_q = -voq
            il_ref_d = dg_par[i, FF] * iod - omega_nom * cf * voq + dg_par[i, KPV] * ev_d + dg_par[i, KIV] * x[s + 3]
            il_ref_q = dg_par[i, FF] * ioq + omega_nom * cf * vod + dg_par[i, KPV] * ev_q + dg_par[i, KIV] * x[s + 4]
            ei_d = il_ref_d - ild
            ei_q = il_ref_q - ilq
            vid = -omega_nom * lf * ilq + dg_par[i, KPC] * ei_d + dg_par[i, KIC] * x[s + 5]
            viq = omega_nom * lf * ild + dg_par[i, KPC] * ei_q + dg_par[i, KIC] * x[s + 6]
            dxdt[s + 3] = ev_d
            dxdt[s + 4] = ev_q
            dxdt[s + 5] = ei_d
            dxdt[s + 6] = ei_q
            rf = dg_par[i, RF] / lf
            dxdt[s + 7] = -rf * ild + omega[i] * ilq + (vid - vod) / lf
            dxdt[s + 8] = -rf * ilq - omega[i] * ild + (viq - voq) / lf
            dxdt[s + 9] = omega[i] * voq + (ild - iod) / cf
            dxdt[s + 10] = -omega[i] * vod + (ilq - ioq) / cf

    for i in range(n_dg):
        dxdt[o_w + i] = 0.0


@njit(cache=True)
def secondary_frequency_step(x, ns, o_w, dg_par, omega_nom, w_decay, w_gain):
    """Advance the frequency set-points w exactly over a half step, powers held (Strang splitting).

    dw/dt = −K(w − ω_nom·1) + a·G·(m_P∘P) is linear in w with K = a·(Lap + G); its modes reach 1e5 s⁻¹ on
    microgrid-20 (a = 400, weights 60), far too stiff for RK4, but its exact flow over h is
    w ← w* + e^{−Kh}(w − w*), w* = ω_nom + K⁻¹·a·G·(m_P∘P). w_decay = e^{−Kh} and w_gain = K⁻¹·a·G.
    """
    n_dg = dg_par.shape[0]
    mp_p = np.empty(n_dg)
    dev = np.empty(n_dg)
    w_star = np.empty(n_dg)
    for i in range(n_dg):
        mp_p[i] = dg_par[i, MP] * x[i * ns + 1]
    for i in range(n_dg):
        acc = omega_nom
        for m in range(n_dg):
            acc += w_gain[i, m] * mp_p[m]
        w_star[i] = acc
        dev[i] = x[o_w + i] - acc
    for i in range(n_dg):
        acc = w_star[i]
        for m in range(n_dg):
            acc += w_decay[i, m] * dev[m]
        x[o_w + i] = acc


@njit(cache=True)
def advance(x, t0, n_steps, dt, model, dg_par, dg_bus, vn, line_from, line_to, line_r, line_l, load_bus,
            load_r, load_l, minv, omega_nom, w_decay, w_gain, t_on, ok):
    """Integrate E environments n_steps steps of dt (s) from their times t0 [E] (s), in place.

    Each step is a Strang splitting: the exact half-step flow of the secondary frequency set-points
    (active from t_on), a classical RK4 step of everything else, another exact half step.
    x [E, nx]; vn [E, n_dg] set-points (V); load_r/load_l [E, n_load]; minv [E, n_bus, n_bus]; w_decay and
    w_gain [n_dg, n_dg] (see secondary_frequency_step); ok [E] (bool, in/out) marks environments that are
    still finite: a diverged one is left as it is.
    """
    n_env, nx = x.shape
    n_bus = minv.shape[1]
    k1 = np.empty(nx)
    k2 = np.empty(nx)
    k3 = np.empty(nx)
    k4 = np.empty(nx)
    tmp = np.empty(nx)
    vb = np.empty((n_bus, 2))
    n_dg = dg_bus.shape[0]
    ns = NS_FULL if model == FULL else NS_REDUCED
    o_w = nx - n_dg
    for e in range(n_env):
        if not ok[e]:
            continue
        xe = x[e]
        for step in range(n_steps):
            # Steps that start before t_on (to half a step) keep w frozen.
            active = t0[e] + step * dt >= t_on - 0.5 * dt
            if active:
                secondary_frequency_step(xe, ns, o_w, dg_par, omega_nom, w_decay, w_gain)
            rhs(xe, model, dg_par, dg_bus, vn[e], line_from, line_to, line_r, line_l, load_bus, load_r[e],
                load_l[e], minv[e], omega_nom, k1, vb)
            for m in range(nx):
                tmp[m] = xe[m] + 0.5 * dt * k1[m]
            rhs(tmp, model, dg_par, dg_bus, vn[e], line_from, line_to, line_r, line_l, load_bus,
                load_r[e], load_l[e], minv[e], omega_nom, k2, vb)
            for m in range(nx):
                tmp[m] = xe[m] + 0.5 * dt * k2[m]
            rhs(tmp, model, dg_par, dg_bus, vn[e], line_from, line_to, line_r, line_l, load_bus,
                load_r[e], load_l[e], minv[e], omega_nom, k3, vb)
            for m in range(nx):
                tmp[m] = xe[m] + dt * k3[m]
            rhs(tmp, model, dg_par, dg_bus, vn[e], line_from, line_to, line_r, line_l, load_bus,
                load_r[e], load_l[e], minv[e], omega_nom, k4, vb)
            for m in range(nx):
                xe[m] += dt / 6.0 * (k1[m] + 2.0 * k2[m] + 2.0 * k3[m] + k4[m])
            if active:
                secondary_frequency_step(xe, ns, o_w, dg_par, omega_nom, w_decay, w_gain)
            finite = True
            for m in range(nx):
                if not np.isfinite(xe[m]) or abs(xe[m]) > 1e9:
                    finite = False
            if not finite:
                ok[e] = False
                break


@njit(cache=True)
def bus_voltages(x, model, dg_par, dg_bus, vn, line_from, line_to, line_r, line_l, load_bus, load_r, load_l,
                 minv, omega_nom, vb_out):
    """Bus voltages (V, common frame) of E environments at their current state: vb_out [E, n_bus, 2]."""
    n_env, nx = x.shape
    dxdt = np.empty(nx)
    for e in range(n_env):
        rhs(x[e], model, dg_par, dg_bus, vn[e], line_from, line_to, line_r, line_l, load_bus, load_r[e],
            load_l[e], minv[e], omega_nom, dxdt, vb_out[e])


def kcl_matrix(n_bus: int, dg_bus: np.ndarray, dg_l_h: np.ndarray, line_from: np.ndarray, line_to: np.ndarray,
               line_l_h: np.ndarray, load_bus: np.ndarray, load_l_h: np.ndarray) -> np.ndarray:
    """M of the differentiated KCL (1/H); load_l_h may be [n_load] or [E, n_load] (then M is [E, n, n])."""
    load_l_h = np.asarray(load_l_h, dtype=np.float64)
    batch = load_l_h.shape[:-1]
    m = np.zeros(batch + (n_bus, n_bus))
    np.add.at(m, (..., dg_bus, dg_bus), 1.0 / dg_l_h)
    inv_line = 1.0 / line_l_h
    np.add.at(m, (..., line_from, line_from), inv_line)
    np.add.at(m, (..., line_to, line_to), inv_line)
    np.add.at(m, (..., line_from, line_to), -inv_line)
    np.add.at(m, (..., line_to, line_from), -inv_line)
    for j, bus in enumerate(load_bus):
        m[..., bus, bus] += 1.0 / load_l_h[..., j]
    return m
