"""Independent references for PGSim: the original r_N formulation, and a NumPy twin of our integrator.

Why this module exists
----------------------
`simsvc.model` eliminates the bus voltages (the r_N → ∞ limit), stores every current in the common frame
and integrates with fixed-step RK4. To check that choice we need a solution of the *original* equations
written separately from that kernel, straight from the equations in docs/pgsim.md:

* every DG in its own dq frame (reduced: δ, P, Q, i_od, i_oq with the coupling inductor's cross terms at
  ω_com; full: the 13 states of the full model with ω_i), lines and loads in the common frame;
* bus voltages algebraic through the virtual shunt: v_bus = r_N · (net current injected into the bus), the
  DG output currents rotated into the common frame by δ;
* the secondary frequency law as ordinary states, dw/dt = −a[(Lap + G)(ω − ω_nom) + Lap(m_P∘P)],
  switched on for t ≥ t_on.

Reference state layout (float64, SI): [DG blocks] [lines: n_line × 2] [loads: n_load × 2] [w: n_dg], with
DG block reduced = δ, P, Q, i_od, i_oq and full = δ, P, Q, φ_d, φ_q, γ_d, γ_q, i_ld, i_lq, v_od, v_oq,
i_od, i_oq, all in the DG's own frame. DG 1 keeps a δ slot whose derivative ω_1 − ω_com is identically 0.

`solve_reference` integrates that stiff system (eigenvalues up to ~1e10 s⁻¹ from the shunt) over a
piecewise-constant schedule with Radau (tight tolerances; the truth for the tests) or with odeint/LSODA at
the original PGSim tolerances (the speed reference of `powernet bench sim`). `solve_ours` runs the same
schedule through `GridBatch`, and `advance_numpy` is a pure NumPy re-implementation of our RK4 + Strang
scheme, vectorised over environments, to show what Numba buys.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy.integrate import ODEintWarning, odeint, solve_ivp
from scipy.sparse import csc_matrix

from common.errors import InputError
from simsvc import model
from simsvc.simulator import GridBatch, secondary_frequency_flow
from simsvc.systems import DG_COL, System

R_N_OHM = 1.0e4
NS_REDUCED = 5
NS_FULL = 13
ODEINT_RTOL = 1e-11
ODEINT_ATOL = 1e-10
RADAU_RTOL = 1e-10
RADAU_ATOL = 1e-9
METHODS = ("radau", "odeint")

# Columns of System.dg_params, bound once for the kernels below.
_MP, _NQ, _WC, _RC, _LC = (DG_COL[k] for k in ("m_p", "n_q", "omega_c", "r_c", "l_c"))
_KPV, _KIV, _KPC, _KIC = (DG_COL[k] for k in ("k_pv", "k_iv", "k_pc", "k_ic"))
_FF, _RF, _LF, _CF = (DG_COL[k] for k in ("f", "r_f", "l_f", "c_f"))


# ---------------------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Schedule:
    """Piecewise-constant inputs: interval k lasts duration_s[k] with set-points vn_v[k] (V) and loads
    scaled by load_factor[k] (R and L alike). Time starts at 0 from rest."""

    duration_s: np.ndarray   # [K]
    vn_v: np.ndarray         # [K, n_dg]
    load_factor: np.ndarray  # [K, n_load]

    @property
    def n_intervals(self) -> int:
        return int(self.duration_s.shape[0])

    @property
    def end_times_s(self) -> np.ndarray:
        return np.cumsum(self.duration_s)


def episode_schedule(system: System, seed: int, n_steps: int | None = None,
                     setpoint_range_v: tuple[float, float] = (490.0, 535.0), walk_step: float = 0.05) -> Schedule:
    """A seeded episode like the env's 'walk' disturbance, cut into control-step intervals.

    The warm-up (V_nom, initial loads U(0.8, 1.2)) is split into control-step-long intervals so that the
    voltages are compared there too; then n_steps control steps with set-points U(setpoint_range_v) and
    load factors taking a U(±walk_step) step before every control step but the first (as in the env).
    """
    if not system.has_episode:
        raise InputError(f"system '{system.name}' has no [episode] section")
    rng = np.random.default_rng(seed)
    ctrl_s = system.control_dt_s
    n_warm = int(round(system.warmup_s / ctrl_s))
    n_steps = int(system.episode_steps if n_steps is None else n_steps)
    n = n_warm + n_steps
    factors = np.empty((n, system.n_load))
    factors[: n_warm + 1] = rng.uniform(0.8, 1.2, size=system.n_load)
    for k in range(n_warm + 1, n):
        factors[k] = np.clip(factors[k - 1] + rng.uniform(-walk_step, walk_step, size=system.n_load), 0.5, 1.5)
    vn = np.full((n, system.n_dg), system.v_nom_v)
    vn[n_warm:] = rng.uniform(*setpoint_range_v, size=(n_steps, system.n_dg))
    return Schedule(duration_s=np.full(n, ctrl_s), vn_v=vn, load_factor=factors)


# ---------------------------------------------------------------------------------------------------------
# The original r_N formulation (Numba right-hand side)
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RnProblem:
    """Packed arrays of the r_N right-hand side (few arguments keep each Numba call cheap for odeint)."""

    full: bool
    dg_par: np.ndarray     # [n_dg, 13] System.dg_params
    conn: np.ndarray       # int64: n_bus, n_line, n_load, dg_bus[n_dg], line_from, line_to, load_bus
    sec_mats: np.ndarray   # [2, n_dg, n_dg]: a·Lap and a·G
    r_n_ohm: float
    omega_nom: float
    nx: int

    def branch(self, system: System, load_factor: np.ndarray) -> np.ndarray:
        """line_r, line_l, load_r, load_l (Ω, H) packed, with the loads scaled."""
        return np.concatenate([system.line_r_ohm, system.line_l_h, system.load_r_ohm * load_factor,
                               system.load_l_h * load_factor])


def rn_problem(system: System, dg_model: str, r_n_ohm: float = R_N_OHM) -> RnProblem:
    """Pack a system for `rn_rhs`; the secondary frequency matrices are rebuilt here from the agent graph."""
    if dg_model not in ("reduced", "full"):
        raise InputError(f"dg_model must be 'reduced' or 'full', got {dg_model!r}")
    n = system.n_dg
    conn = np.concatenate([[system.n_bus, system.n_line, system.n_load], system.dg_bus, system.line_from,
                           system.line_to, system.load_bus]).astype(np.int64)
    sec = np.zeros((2, n, n))
    if system.sec_f_enabled:
        weights = system.agent_adjacency * system.sec_f_edge_weight
        sec[0] = system.sec_f_gain * (np.diag(weights.sum(axis=1)) - weights)
        sec[1, 0, 0] = system.sec_f_gain
    ns = NS_FULL if dg_model == "full" else NS_REDUCED
    nx = n * ns + 2 * system.n_line + 2 * system.n_load + n
    return RnProblem(full=dg_model == "full", dg_par=np.ascontiguousarray(system.dg_params), conn=conn,
                     sec_mats=sec, r_n_ohm=float(r_n_ohm), omega_nom=system.omega_nom, nx=nx)


@njit(cache=True)
def rn_rhs_into(x, full, dg_par, conn, branch, vn, sec_mats, r_n, omega_nom, sec_on, dxdt):
    """dx/dt of the original formulation into dxdt (see the module docstring for the layout)."""
    n_dg = dg_par.shape[0]
    n_bus = conn[0]
    n_line = conn[1]
    n_load = conn[2]
    dg_bus = conn[3:3 + n_dg]
    line_from = conn[3 + n_dg:3 + n_dg + n_line]
    line_to = conn[3 + n_dg + n_line:3 + n_dg + 2 * n_line]
    load_bus = conn[3 + n_dg + 2 * n_line:3 + n_dg + 2 * n_line + n_load]
    line_r = branch[0:n_line]
    line_l = branch[n_line:2 * n_line]
    load_r = branch[2 * n_line:2 * n_line + n_load]
    load_l = branch[2 * n_line + n_load:2 * n_line + 2 * n_load]
    ns = 13 if full else 5
    o_line = n_dg * ns
    o_load = o_line + 2 * n_line
    o_w = o_load + 2 * n_load

    omega = np.empty(n_dg)
    for i in range(n_dg):
        omega[i] = x[o_w + i] - dg_par[i, _MP] * x[i * ns + 1]
    w_com = omega[0]

    # Net current injected into every bus (common frame); the shunt turns it into the bus voltage.
    inj = np.zeros((n_bus, 2))
    for i in range(n_dg):
        s = i * ns
        c = np.cos(x[s])
        sn = np.sin(x[s])
        iod = x[s + ns - 2]
        ioq = x[s + ns - 1]
        inj[dg_bus[i], 0] += c * iod - sn * ioq
        inj[dg_bus[i], 1] += sn * iod + c * ioq
    for j in range(n_line):
        s = o_line + 2 * j
        inj[line_from[j], 0] -= x[s]
        inj[line_from[j], 1] -= x[s + 1]
        inj[line_to[j], 0] += x[s]
        inj[line_to[j], 1] += x[s + 1]
    for j in range(n_load):
        s = o_load + 2 * j
        inj[load_bus[j], 0] -= x[s]
        inj[load_bus[j], 1] -= x[s + 1]
    v_bus = r_n * inj

    for i in range(n_dg):
        s = i * ns
        wc = dg_par[i, _WC]
        rc = dg_par[i, _RC]
        lc = dg_par[i, _LC]
        c = np.cos(x[s])
        sn = np.sin(x[s])
        vbd = c * v_bus[dg_bus[i], 0] + sn * v_bus[dg_bus[i], 1]   # bus voltage in the DG frame
        vbq = -sn * v_bus[dg_bus[i], 0] + c * v_bus[dg_bus[i], 1]
        p = x[s + 1]
        q = x[s + 2]
        iod = x[s + ns - 2]
        ioq = x[s + ns - 1]
        v_ref = vn[i] - dg_par[i, _NQ] * q
        if full:
            vod = x[s + 9]
            voq = x[s + 10]
            w_cross = omega[i]
        else:
            vod = v_ref
            voq = 0.0
            w_cross = w_com   # the original code's choice for the reduced model (docs/pgsim.md#reduced-model)
        dxdt[s] = omega[i] - w_com
        dxdt[s + 1] = wc * (vod * iod + voq * ioq - p)
        dxdt[s + 2] = wc * (voq * iod - vod * ioq - q)
        dxdt[s + ns - 2] = -rc / lc * iod + w_cross * ioq + (vod - vbd) / lc
        dxdt[s + ns - 1] = -rc / lc * ioq - w_cross * iod + (voq - vbq) / lc
        if full:
            cf = dg_par[i, _CF]
            lf = dg_par[i, _LF]
            ild = x[s + 7]
            ilq = x[s + 8]
            ev_d = v_ref - vod
            ev_q = -voq
            ild_ref = dg_par[i, _FF] * iod - omega_nom * cf * voq + dg_par[i, _KPV] * ev_d + dg_par[i, _KIV] * x[s + 3]
            ilq_ref = dg_par[i, _FF] * ioq + omega_nom * cf * vod + dg_par[i, _KPV] * ev_q + dg_par[i, _KIV] * x[s + 4]
            vid = -omega_nom * lf * ilq + dg_par[i, _KPC] * (ild_ref - ild) + dg_par[i, _KIC] * x[s + 5]
            viq = omega_nom * lf * ild + dg_par[i, _KPC] * (ilq_ref - ilq) + dg_par[i, _KIC] * x[s + 6]
            dxdt[s + 3] = ev_d
            dxdt[s + 4] = ev_q
            dxdt[s + 5] = ild_ref - ild
            dxdt[s + 6] = ilq_ref - ilq
            dxdt[s + 7] = -dg_par[i, _RF] / lf * ild + omega[i] * ilq + (vid - vod) / lf
            dxdt[s + 8] = -dg_par[i, _RF] / lf * ilq - omega[i] * ild + (viq - voq) / lf
            dxdt[s + 9] = omega[i] * voq + (ild - iod) / cf
            dxdt[s + 10] = -omega[i] * vod + (ilq - ioq) / cf

    for j in range(n_line):
        s = o_line + 2 * j
        a = line_r[j] / line_l[j]
        dxdt[s] = -a * x[s] + w_com * x[s + 1] + (v_bus[line_from[j], 0] - v_bus[line_to[j], 0]) / line_l[j]
        dxdt[s + 1] = -a * x[s + 1] - w_com * x[s] + (v_bus[line_from[j], 1] - v_bus[line_to[j], 1]) / line_l[j]
    for j in range(n_load):
        s = o_load + 2 * j
        a = load_r[j] / load_l[j]
        dxdt[s] = -a * x[s] + w_com * x[s + 1] + v_bus[load_bus[j], 0] / load_l[j]
        dxdt[s + 1] = -a * x[s + 1] - w_com * x[s] + v_bus[load_bus[j], 1] / load_l[j]

    # Secondary frequency consensus (docs/pgsim.md#secondary-frequency-control):
    # dw/dt = −[(a·Lap + a·G)(ω − ω_nom) + a·Lap(m_P∘P)].
    for i in range(n_dg):
        acc = 0.0
        if sec_on:
            for m in range(n_dg):
                lap = sec_mats[0, i, m]
                acc += (lap + sec_mats[1, i, m]) * (omega[m] - omega_nom) + lap * dg_par[m, _MP] * x[m * ns + 1]
        dxdt[o_w + i] = -acc


@njit(cache=True)
def rn_rhs(t, x, full, dg_par, conn, branch, vn, sec_mats, r_n, omega_nom, sec_on):
    """f(t, x) of the original formulation (autonomous within an interval; t is for the solvers)."""
    dxdt = np.empty_like(x)
    rn_rhs_into(x, full, dg_par, conn, branch, vn, sec_mats, r_n, omega_nom, sec_on, dxdt)
    return dxdt


@njit(cache=True)
def rn_jacobian(t, x, full, dg_par, conn, branch, vn, sec_mats, r_n, omega_nom, sec_on):
    """Forward-difference Jacobian of rn_rhs in one compiled call (Radau's Newton iteration needs only
    an approximate one, and scipy's own would call Python nx times)."""
    nx = x.shape[0]
    f0 = np.empty(nx)
    f1 = np.empty(nx)
    rn_rhs_into(x, full, dg_par, conn, branch, vn, sec_mats, r_n, omega_nom, sec_on, f0)
    jac = np.empty((nx, nx))
    xp = x.copy()
    for j in range(nx):
        h = 1.5e-8 * max(abs(x[j]), 1.0)
        xp[j] = x[j] + h
        rn_rhs_into(xp, full, dg_par, conn, branch, vn, sec_mats, r_n, omega_nom, sec_on, f1)
        xp[j] = x[j]
        for k in range(nx):
            jac[k, j] = (f1[k] - f0[k]) / h
    return jac


def _sparse_jacobian(t: float, x: np.ndarray, *args: object) -> csc_matrix:
    """rn_jacobian as a sparse matrix: Radau then factorises with SuperLU, ~20 % faster on microgrid-20."""
    return csc_matrix(rn_jacobian(t, x, *args))


def compile_kernels(system: System, dg_model: str) -> None:
    """Compile (or load from Numba's cache) the r_N kernels for both secondary-frequency states."""
    prob = rn_problem(system, dg_model)
    x = reference_initial_state(prob, system.n_dg)
    for sec_on in (False, True):
        args = (prob.full, prob.dg_par, prob.conn, prob.branch(system, np.ones(system.n_load)),
                np.full(system.n_dg, system.v_nom_v), prob.sec_mats, prob.r_n_ohm, prob.omega_nom, sec_on)
        rn_rhs(0.0, x, *args)
        rn_jacobian(0.0, x, *args)


def reference_initial_state(prob: RnProblem, n_dg: int) -> np.ndarray:
    """Rest: all zero but w = ω_nom (bus voltages 0, consistent with the zero currents)."""
    x = np.zeros(prob.nx)
    x[-n_dg:] = prob.omega_nom
    return x


def reference_voltages_pu(system: System, prob: RnProblem, x: np.ndarray, vn_v: np.ndarray) -> np.ndarray:
    """DG output voltage (p.u.): |v_o|/V_nom (full) or (Vn − n_Q·Q)/V_nom (reduced)."""
    ns = NS_FULL if prob.full else NS_REDUCED
    dg = x[: system.n_dg * ns].reshape(system.n_dg, ns)
    if prob.full:
        return np.hypot(dg[:, 9], dg[:, 10]) / system.v_nom_v
    return (vn_v - system.dg_params[:, _NQ] * dg[:, 2]) / system.v_nom_v


def _pieces(system: System, schedule: Schedule) -> list[tuple[int, float, float, bool]]:
    """(interval, start, end, secondary frequency on) pieces, split where t_on falls inside an interval."""
    t_on = system.sec_f_t_on_s
    out = []
    t0 = 0.0
    for k, dur in enumerate(schedule.duration_s):
        t1 = t0 + float(dur)
        if system.sec_f_enabled and t0 < t_on - 1e-12 < t1 - 2e-12:
            out += [(k, t0, t_on, False), (k, t_on, t1, True)]
        else:
            out.append((k, t0, t1, bool(system.sec_f_enabled and t0 >= t_on - 1e-12)))
        t0 = t1
    return out


def solve_reference(system: System, dg_model: str, schedule: Schedule, method: str = "radau",
                    rtol: float | None = None, atol: float | None = None,
                    r_n_ohm: float = R_N_OHM) -> np.ndarray:
    """DG voltages (p.u., [K, n_dg]) at the end of every schedule interval, from the r_N equations.

    method "radau": scipy's solve_ivp Radau, restarted at every input change, with a compiled
    finite-difference Jacobian (defaults rtol 1e-10, atol 1e-9; tightening both tenfold moves the
    voltages by < 1e-11 p.u. on microgrid-6). "odeint": LSODA at the original
    PGSim tolerances (rtol 1e-11, atol 1e-10), one call per interval like the original, no Jacobian.
    """
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    prob = rn_problem(system, dg_model, r_n_ohm)
    x = reference_initial_state(prob, system.n_dg)
    out = np.empty((schedule.n_intervals, system.n_dg))
    for k, t0, t1, sec_on in _pieces(system, schedule):
        vn = np.ascontiguousarray(schedule.vn_v[k], dtype=np.float64)
        args = (prob.full, prob.dg_par, prob.conn, prob.branch(system, schedule.load_factor[k]), vn,
                prob.sec_mats, prob.r_n_ohm, prob.omega_nom, sec_on)
        if method == "radau":
            sol = solve_ivp(rn_rhs, (t0, t1), x, method="Radau", rtol=rtol or RADAU_RTOL,
                            atol=atol or RADAU_ATOL, jac=_sparse_jacobian, args=args)
            if not sol.success:
                raise RuntimeError(f"Radau failed on interval {k}: {sol.message}")
            x = sol.y[:, -1]
        else:
            def f(y: np.ndarray, t: float, a: tuple = args) -> np.ndarray:
                return rn_rhs(t, y, *a)

            # The clock restarts at 0 in every piece, as in the original (the equations are autonomous
            # within a piece). On absolute times LSODA sometimes stays in its non-stiff mode at ~1e-9 s
            # steps until it gives up (seen on microgrid-20). It still can, from rest, when the inputs move by
            # 1e-9 (on either system; neither mxordn nor a Jacobian cures it), so a failure raises with
            # LSODA's message, which replaces its ODEintWarning.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ODEintWarning)
                xs, info = odeint(f, x, [0.0, t1 - t0], rtol=rtol or ODEINT_RTOL, atol=atol or ODEINT_ATOL,
                                  mxstep=10**6, full_output=True)
            if info["message"] != "Integration successful.":
                raise RuntimeError(f"odeint failed on interval {k}: {info['message']}")
            x = xs[-1]
        out[k] = reference_voltages_pu(system, prob, x, vn)
    return out


def solve_ours(system: System, dg_model: str, schedule: Schedule, dt_s: float | None = None) -> np.ndarray:
    """DG voltages (p.u., [K, n_dg]) at every interval end from our Numba integrator (GridBatch, E = 1)."""
    grid = GridBatch(system, 1, dg_model=dg_model, dt_s=dt_s)
    out = np.empty((schedule.n_intervals, system.n_dg))
    for k in range(schedule.n_intervals):
        grid.vn_v[0] = schedule.vn_v[k]
        grid.set_load_factors(schedule.load_factor[k][None])
        grid.advance(grid.steps_for(float(schedule.duration_s[k])))
        out[k] = grid.measure().v_pu[0]
    return out


# ---------------------------------------------------------------------------------------------------------
# NumPy twin of our integrator (simsvc.model.advance), vectorised over environments
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NumpyGrid:
    """Incidence matrices and parameters the NumPy twin needs (built once per system)."""

    full: bool
    ns: int
    n_dg: int
    dg_par: np.ndarray
    inc_dg: np.ndarray     # [n_bus, n_dg]: +1 where DG i feeds bus k
    inc_line: np.ndarray   # [n_bus, n_line]: −1 at the from bus, +1 at the to bus
    inc_load: np.ndarray   # [n_bus, n_load]: −1 at the load's bus
    line_r: np.ndarray
    line_l: np.ndarray
    omega_nom: float
    w_decay: np.ndarray
    w_gain: np.ndarray
    t_on_s: float


def numpy_grid(system: System, dg_model: str, dt_s: float) -> NumpyGrid:
    """Set up the NumPy twin for a system, DG model and step (s)."""
    n_bus = system.n_bus
    inc_dg = np.zeros((n_bus, system.n_dg))
    inc_dg[system.dg_bus, np.arange(system.n_dg)] = 1.0
    inc_line = np.zeros((n_bus, system.n_line))
    inc_line[system.line_from, np.arange(system.n_line)] = -1.0
    inc_line[system.line_to, np.arange(system.n_line)] += 1.0
    inc_load = np.zeros((n_bus, system.n_load))
    inc_load[system.load_bus, np.arange(system.n_load)] = -1.0
    decay, gain = secondary_frequency_flow(system, 0.5 * dt_s)
    full = dg_model == "full"
    return NumpyGrid(full=full, ns=NS_FULL if full else NS_REDUCED, n_dg=system.n_dg, dg_par=system.dg_params,
                     inc_dg=inc_dg, inc_line=inc_line, inc_load=inc_load, line_r=system.line_r_ohm,
                     line_l=system.line_l_h, omega_nom=system.omega_nom, w_decay=decay, w_gain=gain,
                     t_on_s=system.sec_f_t_on_s)


def _rhs_numpy(g: NumpyGrid, x: np.ndarray, vn: np.ndarray, load_r: np.ndarray, load_l: np.ndarray,
               minv: np.ndarray) -> np.ndarray:
    """Our kernel's right-hand side (w held) for all envs at once: x [E, nx] -> dx/dt [E, nx]."""
    n_env = x.shape[0]
    ns, n = g.ns, g.n_dg
    par = g.dg_par
    n_line = g.line_r.shape[0]
    o_line = n * ns
    o_load = o_line + 2 * n_line
    o_w = x.shape[1] - n
    dg = x[:, :o_line].reshape(n_env, n, ns)
    lines = x[:, o_line:o_load].reshape(n_env, n_line, 2)
    loads = x[:, o_load:o_w].reshape(n_env, -1, 2)
    omega = x[:, o_w:] - par[:, _MP] * dg[..., 1]
    w_com = omega[:, :1]
    c, sn = np.cos(dg[..., 0]), np.sin(dg[..., 0])
    if g.full:
        vd, vq = dg[..., 9], dg[..., 10]
        cross = np.broadcast_to(w_com, omega.shape)
    else:
        vd, vq = vn - par[:, _NQ] * dg[..., 2], np.zeros_like(omega)
        cross = 2.0 * w_com - omega
    vo_D, vo_Q = c * vd - sn * vq, sn * vd + c * vq
    i_D, i_Q = dg[..., ns - 2], dg[..., ns - 1]
    ra = par[:, _RC] / par[:, _LC]
    dg_aD = -ra * i_D + cross * i_Q + vo_D / par[:, _LC]
    dg_aQ = -ra * i_Q - cross * i_D + vo_Q / par[:, _LC]
    ra_line = g.line_r / g.line_l
    ln_aD = -ra_line * lines[..., 0] + w_com * lines[..., 1]
    ln_aQ = -ra_line * lines[..., 1] - w_com * lines[..., 0]
    ra_load = load_r / load_l
    ld_aD = -ra_load * loads[..., 0] + w_com * loads[..., 1]
    ld_aQ = -ra_load * loads[..., 1] - w_com * loads[..., 0]
    b_D = dg_aD @ g.inc_dg.T + ln_aD @ g.inc_line.T + ld_aD @ g.inc_load.T
    b_Q = dg_aQ @ g.inc_dg.T + ln_aQ @ g.inc_line.T + ld_aQ @ g.inc_load.T
    vb_D = np.einsum("ekm,em->ek", minv, b_D)
    vb_Q = np.einsum("ekm,em->ek", minv, b_Q)

    out = np.zeros_like(x)
    d_dg = out[:, :o_line].reshape(n_env, n, ns)
    d_dg[..., ns - 2] = dg_aD - (vb_D @ g.inc_dg) / par[:, _LC]
    d_dg[..., ns - 1] = dg_aQ - (vb_Q @ g.inc_dg) / par[:, _LC]
    d_ln = out[:, o_line:o_load].reshape(n_env, n_line, 2)
    d_ln[..., 0] = ln_aD - (vb_D @ g.inc_line) / g.line_l
    d_ln[..., 1] = ln_aQ - (vb_Q @ g.inc_line) / g.line_l
    d_ld = out[:, o_load:o_w].reshape(n_env, -1, 2)
    d_ld[..., 0] = ld_aD - (vb_D @ g.inc_load) / load_l
    d_ld[..., 1] = ld_aQ - (vb_Q @ g.inc_load) / load_l
    wc = par[:, _WC]
    d_dg[..., 0] = omega - w_com
    d_dg[..., 1] = wc * (vo_D * i_D + vo_Q * i_Q - dg[..., 1])
    d_dg[..., 2] = wc * (vo_Q * i_D - vo_D * i_Q - dg[..., 2])
    if g.full:
        iod, ioq = c * i_D + sn * i_Q, -sn * i_D + c * i_Q
        ild, ilq = dg[..., 7], dg[..., 8]
        cf, lf = par[:, _CF], par[:, _LF]
        ev_d = vn - par[:, _NQ] * dg[..., 2] - vd
        ev_q = -vq
        ild_ref = par[:, _FF] * iod - g.omega_nom * cf * vq + par[:, _KPV] * ev_d + par[:, _KIV] * dg[..., 3]
        ilq_ref = par[:, _FF] * ioq + g.omega_nom * cf * vd + par[:, _KPV] * ev_q + par[:, _KIV] * dg[..., 4]
        vid = -g.omega_nom * lf * ilq + par[:, _KPC] * (ild_ref - ild) + par[:, _KIC] * dg[..., 5]
        viq = g.omega_nom * lf * ild + par[:, _KPC] * (ilq_ref - ilq) + par[:, _KIC] * dg[..., 6]
        d_dg[..., 3] = ev_d
        d_dg[..., 4] = ev_q
        d_dg[..., 5] = ild_ref - ild
        d_dg[..., 6] = ilq_ref - ilq
        d_dg[..., 7] = -par[:, _RF] / lf * ild + omega * ilq + (vid - vd) / lf
        d_dg[..., 8] = -par[:, _RF] / lf * ilq - omega * ild + (viq - vq) / lf
        d_dg[..., 9] = omega * vq + (ild - iod) / cf
        d_dg[..., 10] = -omega * vd + (ilq - ioq) / cf
    return out


def _frequency_half_step(g: NumpyGrid, x: np.ndarray) -> None:
    """Exact half-step flow of the set-points w with powers held, in place (see model.secondary_frequency_step)."""
    mp_p = g.dg_par[:, _MP] * x[:, 1:g.n_dg * g.ns:g.ns]
    w_star = g.omega_nom + mp_p @ g.w_gain.T
    x[:, -g.n_dg:] = w_star + (x[:, -g.n_dg:] - w_star) @ g.w_decay.T


def advance_numpy(g: NumpyGrid, x: np.ndarray, t0_s: float, n_steps: int, dt_s: float, vn_v: np.ndarray,
                  load_r_ohm: np.ndarray, load_l_h: np.ndarray, minv: np.ndarray) -> None:
    """Integrate E envs n_steps of dt_s in place with our RK4 + Strang scheme, in NumPy only.

    Same arguments as simsvc.model.advance, but one common start time t0_s for all envs (they move
    together here); an env whose state turns non-finite is frozen at its last finite state.
    """
    ok = np.all(np.isfinite(x), axis=1)
    for step in range(n_steps):
        active = t0_s + step * dt_s >= g.t_on_s - 0.5 * dt_s
        prev = x.copy()
        if active:
            _frequency_half_step(g, x)
        k1 = _rhs_numpy(g, x, vn_v, load_r_ohm, load_l_h, minv)
        k2 = _rhs_numpy(g, x + 0.5 * dt_s * k1, vn_v, load_r_ohm, load_l_h, minv)
        k3 = _rhs_numpy(g, x + 0.5 * dt_s * k2, vn_v, load_r_ohm, load_l_h, minv)
        k4 = _rhs_numpy(g, x + dt_s * k3, vn_v, load_r_ohm, load_l_h, minv)
        x += dt_s / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        if active:
            _frequency_half_step(g, x)
        ok &= np.all(np.isfinite(x) & (np.abs(x) <= 1e9), axis=1)
        x[~ok] = prev[~ok]


def solve_numpy(system: System, dg_model: str, schedule: Schedule, n_envs: int = 1,
                dt_s: float | None = None) -> np.ndarray:
    """DG voltages (p.u., [K, E, n_dg]) at every interval end from the NumPy twin, E identical envs."""
    dt_s = float(dt_s or system.dt_s(dg_model))
    g = numpy_grid(system, dg_model, dt_s)
    nx = model.state_size(model.FULL if g.full else model.REDUCED, system.n_dg, system.n_line, system.n_load)
    x = np.zeros((n_envs, nx))
    x[:, -system.n_dg:] = system.omega_nom
    out = np.empty((schedule.n_intervals, n_envs, system.n_dg))
    t_s = 0.0
    for k in range(schedule.n_intervals):
        vn = np.repeat(schedule.vn_v[k][None], n_envs, axis=0)
        load_r = np.repeat((system.load_r_ohm * schedule.load_factor[k])[None], n_envs, axis=0)
        load_l = np.repeat((system.load_l_h * schedule.load_factor[k])[None], n_envs, axis=0)
        m = model.kcl_matrix(system.n_bus, system.dg_bus, system.dg_params[:, _LC], system.line_from,
                             system.line_to, system.line_l_h, system.load_bus, load_l)
        n_steps = int(round(float(schedule.duration_s[k]) / dt_s))
        advance_numpy(g, x, t_s, n_steps, dt_s, vn, load_r, load_l, np.linalg.inv(m))
        t_s += n_steps * dt_s
        dg = x[:, : g.n_dg * g.ns].reshape(n_envs, g.n_dg, g.ns)
        if g.full:
            out[k] = np.hypot(dg[..., 9], dg[..., 10]) / system.v_nom_v
        else:
            out[k] = (vn - system.dg_params[:, _NQ] * dg[..., 2]) / system.v_nom_v
    return out
