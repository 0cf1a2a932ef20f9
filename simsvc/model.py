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
for the D and Q axes, and it changes only when the loads change (once per control step), so we factorise
it then (a sparse LDLᵀ with no fill on a radial feeder, docs/pgsim.md#sparse-network-solve; or a dense
inverse on request) and solve with the factor inside the right-hand side. Every current (DG output currents included) is
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

from typing import NamedTuple

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
        ldl, net, omega_nom, dxdt, vb):
    """Time derivative of one environment's state with the frequency set-points w held (dw/dt = 0).

    Writes dxdt and the bus voltages vb [n_bus, 2] (V, common frame). The KCL system M v = b is solved with
    the dense inverse minv [n_bus, n_bus] when net.sparse is 0, else with the sparse LDLᵀ factor ldl (see
    KclStructure and docs/pgsim.md#sparse-network-solve); the other argument is then a placeholder.
    """
    n_dg = dg_bus.shape[0]
    n_line = line_from.shape[0]
    n_load = load_bus.shape[0]
    n_bus = vb.shape[0]
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

    if net.sparse:
        ldl_solve(ldl, net.colptr, net.row, net.order, b, vb)
    else:
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
def secondary_frequency_step(x, ns, o_w, dg_par, omega_nom, flow):
    """Advance the frequency set-points w exactly over a half step, powers held (Strang splitting).

    dw/dt = −K(w − ω_nom·1) + a·G·(m_P∘P) is linear in w with K = a·(Lap + G); its modes reach 1e5 s⁻¹ on
    microgrid-20 (a = 400, weights 60), far too stiff for RK4, but its exact flow over h is
    w ← w* + e^{−Kh}(w − w*), w* = ω_nom + K⁻¹·a·G·(m_P∘P). With flow.taylor_terms == 0, flow.decay is the
    dense e^{−Kh} and flow.gain the dense K⁻¹·a·G; otherwise e^{−Kh} is applied as its Taylor series in
    the sparse −Kh (CSR ptr/idx/val) to round-off, and only K⁻¹·a·G's one non-zero column (G pins DG 1)
    flow.pin_col is used (docs/pgsim.md#sparse-frequency-flow).
    """
    n_dg = dg_par.shape[0]
    mp_p = np.empty(n_dg)
    dev = np.empty(n_dg)
    w_star = np.empty(n_dg)
    for i in range(n_dg):
        mp_p[i] = dg_par[i, MP] * x[i * ns + 1]
    if flow.taylor_terms == 0:
        for i in range(n_dg):
            acc = omega_nom
            for m in range(n_dg):
                acc += flow.gain[i, m] * mp_p[m]
            w_star[i] = acc
            dev[i] = x[o_w + i] - acc
        for i in range(n_dg):
            acc = w_star[i]
            for m in range(n_dg):
                acc += flow.decay[i, m] * dev[m]
            x[o_w + i] = acc
        return
    for i in range(n_dg):
        w_star[i] = omega_nom + flow.pin_col[i] * mp_p[0]
        dev[i] = x[o_w + i] - w_star[i]
    term = dev.copy()
    nxt = np.empty(n_dg)
    for k in range(1, flow.taylor_terms + 1):
        for i in range(n_dg):
            acc = 0.0
            for p in range(flow.ptr[i], flow.ptr[i + 1]):
                acc += flow.val[p] * term[flow.idx[p]]
            nxt[i] = acc / k
        for i in range(n_dg):
            term[i] = nxt[i]
            dev[i] += nxt[i]
    for i in range(n_dg):
        x[o_w + i] = w_star[i] + dev[i]


@njit(cache=True)
def advance(x, t0, n_steps, dt, model, dg_par, dg_bus, vn, line_from, line_to, line_r, line_l, load_bus,
            load_r, load_l, minv, ldl, net, omega_nom, flow, t_on, ok):
    """Integrate E environments n_steps steps of dt (s) from their times t0 [E] (s), in place.

    Each step is a Strang splitting: the exact half-step flow of the secondary frequency set-points
    (active from t_on), a classical RK4 step of everything else, another exact half step.
    x [E, nx]; vn [E, n_dg] set-points (V); load_r/load_l [E, n_load]; the KCL solve uses minv [E, n_bus,
    n_bus] (dense) or ldl [E, n_bus + nnz] (sparse) as net.sparse says (see rhs); flow: the set-point flow
    (see secondary_frequency_step); ok [E] (bool, in/out) marks environments that are still finite: a
    diverged one is left as it is.
    """
    n_env, nx = x.shape
    n_bus = net.order.shape[0]
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
        me = minv[e if minv.shape[0] > 1 else 0]
        le = ldl[e if ldl.shape[0] > 1 else 0]
        for step in range(n_steps):
            # Steps that start before t_on (to half a step) keep w frozen.
            active = t0[e] + step * dt >= t_on - 0.5 * dt
            if active:
                secondary_frequency_step(xe, ns, o_w, dg_par, omega_nom, flow)
            rhs(xe, model, dg_par, dg_bus, vn[e], line_from, line_to, line_r, line_l, load_bus, load_r[e],
                load_l[e], me, le, net, omega_nom, k1, vb)
            for m in range(nx):
                tmp[m] = xe[m] + 0.5 * dt * k1[m]
            rhs(tmp, model, dg_par, dg_bus, vn[e], line_from, line_to, line_r, line_l, load_bus,
                load_r[e], load_l[e], me, le, net, omega_nom, k2, vb)
            for m in range(nx):
                tmp[m] = xe[m] + 0.5 * dt * k2[m]
            rhs(tmp, model, dg_par, dg_bus, vn[e], line_from, line_to, line_r, line_l, load_bus,
                load_r[e], load_l[e], me, le, net, omega_nom, k3, vb)
            for m in range(nx):
                tmp[m] = xe[m] + dt * k3[m]
            rhs(tmp, model, dg_par, dg_bus, vn[e], line_from, line_to, line_r, line_l, load_bus,
                load_r[e], load_l[e], me, le, net, omega_nom, k4, vb)
            for m in range(nx):
                xe[m] += dt / 6.0 * (k1[m] + 2.0 * k2[m] + 2.0 * k3[m] + k4[m])
            if active:
                secondary_frequency_step(xe, ns, o_w, dg_par, omega_nom, flow)
            finite = True
            for m in range(nx):
                if not np.isfinite(xe[m]) or abs(xe[m]) > 1e9:
                    finite = False
            if not finite:
                ok[e] = False
                break


@njit(cache=True)
def bus_voltages(x, model, dg_par, dg_bus, vn, line_from, line_to, line_r, line_l, load_bus, load_r, load_l,
                 minv, ldl, net, omega_nom, vb_out):
    """Bus voltages (V, common frame) of E environments at their current state: vb_out [E, n_bus, 2]."""
    n_env, nx = x.shape
    dxdt = np.empty(nx)
    for e in range(n_env):
        rhs(x[e], model, dg_par, dg_bus, vn[e], line_from, line_to, line_r, line_l, load_bus, load_r[e],
            load_l[e], minv[e if minv.shape[0] > 1 else 0], ldl[e if ldl.shape[0] > 1 else 0], net, omega_nom,
            dxdt, vb_out[e])


# ---------------------------------------------------------------------------------------------------------
# Sparse network solve (docs/pgsim.md#sparse-network-solve)
# ---------------------------------------------------------------------------------------------------------
class KclStructure(NamedTuple):
    """The fixed sparsity of M's LDLᵀ factor, from the bus graph alone (loads only change values).

    Buses are eliminated in `order` (a minimum-degree order: leaves first on a radial feeder, so no fill).
    Position j is bus order[j]; column j of the unit lower factor L holds rows row[colptr[j]:colptr[j+1]]
    (positions > j). A factor's values live in one float64 vector: D at 0..n−1, then L's off-diagonal
    entries. Factorising column j subtracts val[upd_a]·val[upd_b]/D_j from val[upd_t] for the updates
    upd_ptr[j]:upd_ptr[j+1] (the Schur complement on column j's pattern).
    """

    sparse: int                 # 1: solve with the factor; 0: the dense inverse (this structure unused)
    order: np.ndarray           # [n_bus] bus at each elimination position
    pos: np.ndarray             # [n_bus] elimination position of each bus
    colptr: np.ndarray          # [n_bus + 1]
    row: np.ndarray             # [nnz] positions
    upd_ptr: np.ndarray         # [n_bus + 1]
    upd_t: np.ndarray           # [n_upd] indices into the value vector
    upd_a: np.ndarray
    upd_b: np.ndarray
    line_entry: np.ndarray      # [n_line] value index of each line's off-diagonal entry
    base: np.ndarray            # [n_bus + nnz] M's values without the loads


class FrequencyFlow(NamedTuple):
    """How secondary_frequency_step applies e^{−Kh}: dense matrices, or a Taylor series in sparse −Kh."""

    taylor_terms: int           # 0: dense decay and gain
    decay: np.ndarray           # [n_dg, n_dg] e^{−Kh} (dense path; [1, 1] otherwise)
    gain: np.ndarray            # [n_dg, n_dg] K⁻¹·a·G (dense path; [1, 1] otherwise)
    pin_col: np.ndarray         # [n_dg] column 0 of K⁻¹·a·G
    ptr: np.ndarray             # CSR of −Kh
    idx: np.ndarray
    val: np.ndarray


def minimum_degree_order(n: int, edges: list[tuple[int, int]]) -> tuple[list[int], list[set[int]]]:
    """A minimum-degree elimination order of an n-node graph (ties: lowest index) and, per eliminated node,
    its neighbours still present when it is eliminated (the pattern of its factor column, fill included)."""
    adj: list[set[int]] = [set() for _ in range(n)]
    for a, b in edges:
        if a != b:
            adj[a].add(b)
            adj[b].add(a)
    alive = set(range(n))
    order: list[int] = []
    patterns: list[set[int]] = []
    while alive:
        v = min(alive, key=lambda k: (len(adj[k]), k))
        nbrs = set(adj[v])
        for a in nbrs:
            adj[a].discard(v)
            adj[a] |= nbrs - {a}
        alive.remove(v)
        order.append(v)
        patterns.append(nbrs)
    return order, patterns


def kcl_structure(n_bus: int, dg_bus: np.ndarray, dg_l_h: np.ndarray, line_from: np.ndarray,
                  line_to: np.ndarray, line_l_h: np.ndarray, load_bus: np.ndarray) -> KclStructure:
    """The symbolic LDLᵀ analysis of M (see KclStructure) and M's load-free values."""
    order, patterns = minimum_degree_order(n_bus, list(zip(line_from.tolist(), line_to.tolist(), strict=True)))
    pos = np.empty(n_bus, dtype=np.int64)
    pos[np.asarray(order, dtype=np.int64)] = np.arange(n_bus)
    colptr = [0]
    row: list[int] = []
    where: dict[tuple[int, int], int] = {}      # (row position, column position) -> value index
    for j, pattern in enumerate(patterns):
        for i in sorted(int(pos[b]) for b in pattern):
            where[(i, j)] = n_bus + len(row)
            row.append(i)
        colptr.append(len(row))
    upd_ptr = [0]
    upd_t: list[int] = []
    upd_a: list[int] = []
    upd_b: list[int] = []
    for j in range(n_bus):
        rows = row[colptr[j]:colptr[j + 1]]
        for x, i in enumerate(rows):
            for k in rows[: x + 1]:         # k <= i: entry (i, k) of column k, or D_k when i == k
                upd_t.append(k if i == k else where[(i, k)])
                upd_a.append(where[(i, j)])
                upd_b.append(where[(k, j)])
        upd_ptr.append(len(upd_t))
    base = np.zeros(n_bus + len(row))
    np.add.at(base, pos[dg_bus], 1.0 / dg_l_h)
    inv_line = 1.0 / line_l_h
    np.add.at(base, pos[line_from], inv_line)
    np.add.at(base, pos[line_to], inv_line)
    line_entry = np.array([where[(max(int(pos[f]), int(pos[t])), min(int(pos[f]), int(pos[t])))]
                           for f, t in zip(line_from, line_to, strict=True)], dtype=np.int64)
    np.add.at(base, line_entry, -inv_line)
    ints = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
    return KclStructure(sparse=1, order=ints(order), pos=pos, colptr=ints(colptr), row=ints(row),
                        upd_ptr=ints(upd_ptr), upd_t=ints(upd_t), upd_a=ints(upd_a), upd_b=ints(upd_b),
                        line_entry=line_entry, base=base)


@njit(cache=True)
def ldl_factor(val, n, upd_ptr, upd_t, upd_a, upd_b, colptr):
    """Factorise E matrices M = L D Lᵀ in place: val [E, n + nnz] holds M's values on the factor's pattern
    (zeros on fill) and ends as D and L (see KclStructure)."""
    for e in range(val.shape[0]):
        v = val[e]
        for j in range(n):
            d = v[j]
            for u in range(upd_ptr[j], upd_ptr[j + 1]):
                v[upd_t[u]] -= v[upd_a[u]] * v[upd_b[u]] / d
            for p in range(colptr[j], colptr[j + 1]):
                v[n + p] /= d


@njit(cache=True)
def ldl_solve(val, colptr, row, order, b, out):
    """out = M⁻¹ b for both axes (b, out [n_bus, 2], bus order), from M's LDLᵀ factor val (see
    KclStructure): forward substitution with L, division by D, back substitution with Lᵀ."""
    n = order.shape[0]
    y = np.empty((n, 2))
    for j in range(n):
        y[j, 0] = b[order[j], 0]
        y[j, 1] = b[order[j], 1]
    for j in range(n):
        for p in range(colptr[j], colptr[j + 1]):
            lv = val[n + p]
            y[row[p], 0] -= lv * y[j, 0]
            y[row[p], 1] -= lv * y[j, 1]
    for j in range(n):
        y[j, 0] /= val[j]
        y[j, 1] /= val[j]
    for j in range(n - 1, -1, -1):
        for p in range(colptr[j], colptr[j + 1]):
            lv = val[n + p]
            y[j, 0] -= lv * y[row[p], 0]
            y[j, 1] -= lv * y[row[p], 1]
    for j in range(n):
        out[order[j], 0] = y[j, 0]
        out[order[j], 1] = y[j, 1]


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
