"""A batch of E copies of one microgrid moving through time: state, loads, set-points, measurements.

This is the physics side of PGSim with no notion of episodes or rewards (that is `simsvc.env`). It owns the
arrays the Numba kernels of `simsvc.model` work on and turns states into measurements in SI units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import InputError
from simsvc import model
from simsvc.systems import DG_COL, System


@dataclass
class Measurements:
    """What the DGs measure, per environment and DG ([E, n_dg] arrays, SI units unless named _pu)."""

    v_pu: np.ndarray       # output voltage magnitude / V_nom
    f_hz: np.ndarray       # droop frequency ω_i / 2π
    p_w: np.ndarray        # filtered active power
    q_var: np.ndarray      # filtered reactive power
    delta_rad: np.ndarray  # angle of the DG frame against the common frame
    io_dq_a: np.ndarray    # output current in the DG's own frame [E, n_dg, 2]
    io_DQ_a: np.ndarray    # output current in the common frame [E, n_dg, 2]
    vb_DQ_v: np.ndarray    # voltage of the DG's bus in the common frame [E, n_dg, 2]


def secondary_frequency_matrices(system: System) -> tuple[np.ndarray, np.ndarray]:
    """(K, a·G) of the secondary frequency law dw/dt = −K(w − ω_nom) + a·G·(m_P∘P), K = a·(Lap + G)
    (docs/pgsim.md#secondary-frequency-control).

    Lap is the Laplacian of the weighted agent graph (edge_weight × adjacency); G pins DG 1. Zero matrices
    when the system has no secondary frequency control.
    """
    n = system.n_dg
    if not system.sec_f_enabled:
        return np.zeros((n, n)), np.zeros((n, n))
    adjacency = system.agent_adjacency.astype(np.float64) * system.sec_f_edge_weight
    laplacian = np.diag(adjacency.sum(axis=1)) - adjacency
    pin = np.zeros((n, n))
    pin[0, 0] = 1.0
    return system.sec_f_gain * (laplacian + pin), system.sec_f_gain * pin


def secondary_frequency_flow(system: System, h_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(e^{−K·h}, K⁻¹·a·G): the exact flow of the set-points w over h seconds with powers held."""
    k, a_pin = secondary_frequency_matrices(system)
    n = system.n_dg
    if not system.sec_f_enabled:
        return np.eye(n), np.zeros((n, n))
    eigval, eigvec = np.linalg.eigh(k)  # K is symmetric positive definite on a connected, pinned graph
    decay = (eigvec * np.exp(-eigval * h_s)) @ eigvec.T
    return np.ascontiguousarray(decay), np.ascontiguousarray(np.linalg.solve(k, a_pin))


def frequency_flow(system: System, h_s: float, mode: str = "auto") -> model.FrequencyFlow:
    """How the kernel applies the set-points' exact flow over h seconds (docs/pgsim.md#sparse-frequency-flow).

    mode "dense": the matrices of secondary_frequency_flow. "taylor": e^{−Kh}·v as its Taylor series in the
    sparse −Kh, cut where the remainder bound ρ^{m+1}/(m+1)!/(1 − ρ/(m+2)) (ρ = ‖Kh‖_∞) drops below
    2^-53, which needs ρ <= 4. "auto": taylor where that is allowed and m·nnz(K) < n_dg², else dense.
    """
    if mode not in ("auto", "dense", "taylor"):
        raise InputError(f"frequency flow must be 'auto', 'dense' or 'taylor', got {mode!r}")
    k, _ = secondary_frequency_matrices(system)
    n = system.n_dg
    a = -h_s * k
    rho = float(np.abs(a).sum(axis=1).max())
    terms = 0
    if 0.0 < rho <= 4.0:
        bound, m = rho, 0
        while bound / (1.0 - rho / (m + 2)) > 2.0 ** -53:
            m += 1
            bound *= rho / (m + 1)
        terms = m
    nnz = int(np.count_nonzero(a))
    use_taylor = mode == "taylor" or (mode == "auto" and terms > 0 and terms * nnz < n * n)
    if mode == "taylor" and terms == 0:
        raise InputError(f"{system.name}: the Taylor flow needs 0 < ||K h|| <= 4, got {rho:.3g}")
    decay, gain = secondary_frequency_flow(system, h_s)
    ptr = np.concatenate([[0], np.cumsum(np.count_nonzero(a, axis=1))]).astype(np.int64)
    idx = np.nonzero(a)[1].astype(np.int64)
    if not use_taylor:
        return model.FrequencyFlow(0, decay, gain, np.ascontiguousarray(gain[:, 0]), ptr, idx, a[a != 0])
    return model.FrequencyFlow(terms, np.zeros((1, 1)), np.zeros((1, 1)), np.ascontiguousarray(gain[:, 0]),
                               ptr, idx, a[a != 0])


TRACE_NAMES = ("t", "v_pu", "p_w", "q_var", "f_hz", "vn_v")


def stack_trace(samples: list[tuple]) -> dict[str, np.ndarray]:
    """Turn GridBatch.trace_samples rows of one env into arrays named TRACE_NAMES, each [time, ...]."""
    return {name: np.array([row[k] for row in samples]) for k, name in enumerate(TRACE_NAMES)}


STIFF_LOAD_STEP = 1.5  # load decay rate x RK4 step allowed below which no sub-steps are taken (microgrid-20's
#                        nominal value, stable there with a 25 % margin; docs/pgsim.md#stiff-loads)


class GridBatch:
    """E environments of one system; all share parameters and differ in loads, set-points and state."""

    def __init__(self, system: System, n_envs: int, dg_model: str | None = None, dt_s: float | None = None,
                 solver: str = "sparse", flow: str = "auto"):
        """solver: "sparse" (LDLᵀ of M, the default) or "dense" (M⁻¹); flow: see frequency_flow. Both choices
        give the same trajectories to round-off (docs/pgsim.md#sparse-network-solve)."""
        if n_envs < 1:
            raise InputError(f"n_envs must be >= 1, got {n_envs}")
        self.system = system
        self.n_envs = n_envs
        self.dg_model = dg_model or system.dg_model
        if self.dg_model not in ("reduced", "full"):
            raise InputError(f"dg_model must be 'reduced' or 'full', got {self.dg_model!r}")
        self.model = model.FULL if self.dg_model == "full" else model.REDUCED
        self.ns = model.dg_state_size(self.model)
        self.dt_s = float(dt_s or system.dt_s(self.dg_model))
        self.nx = model.state_size(self.model, system.n_dg, system.n_line, system.n_load)
        self.o_line = system.n_dg * self.ns
        self.o_load = self.o_line + 2 * system.n_line
        self.o_w = self.o_load + 2 * system.n_load

        if solver not in ("sparse", "dense"):
            raise InputError(f"solver must be 'sparse' or 'dense', got {solver!r}")
        self.solver = solver
        self.flow_mode = flow
        self.flow = frequency_flow(system, 0.5 * self.dt_s, flow)
        self._flows = {1: self.flow}  # the half-step flow for each sub-step count in use (see `substeps`)
        rates = system.load_r_ohm / system.load_l_h
        # the largest load decay rate x step taken in one RK4 step: the nominal loads' own, or STIFF_LOAD_STEP
        # where that is larger (docs/pgsim.md#stiff-loads)
        self._load_rate_step = max(float(rates.max()) * self.dt_s if rates.size else 0.0, STIFF_LOAD_STEP)
        net = model.kcl_structure(system.n_bus, system.dg_bus, system.dg_params[:, DG_COL["l_c"]], system.line_from,
                                  system.line_to, system.line_l_h, system.load_bus)
        self.net = net._replace(sparse=int(solver == "sparse"))
        self._n_q = system.dg_params[:, DG_COL["n_q"]].copy()  # droop gains, read at every measurement
        self._m_p = system.dg_params[:, DG_COL["m_p"]].copy()
        self._load_pos = net.pos[system.load_bus]  # elimination position of each load's bus
        self._loads_share_bus = len(np.unique(self._load_pos)) < len(self._load_pos)

        self.x = np.zeros((n_envs, self.nx))
        self.t_s = np.zeros(n_envs)
        self.vn_v = np.full((n_envs, system.n_dg), system.v_nom_v)
        self.load_factor = np.ones((n_envs, system.n_load))
        self.ok = np.ones(n_envs, dtype=np.bool_)
        self._load_r = np.empty((n_envs, system.n_load))
        self._load_l = np.empty((n_envs, system.n_load))
        dense = solver == "dense"
        self._minv = np.empty((n_envs, system.n_bus, system.n_bus) if dense else (1, 1, 1))
        self._ldl = np.empty((1, 1) if dense else (n_envs, self.net.base.shape[0]))
        self._vb = np.zeros((n_envs, system.n_bus, 2))
        self.set_load_factors(self.load_factor)
        self.reset_state()

    # -- set-up ---------------------------------------------------------------------------------------
    def reset_state(self, envs: np.ndarray | None = None) -> None:
        """Start the chosen environments from rest (all zero but the frequency set-points), at t = 0."""
        rows = slice(None) if envs is None else envs
        self.x[rows] = 0.0
        self.x[rows, self.o_w:] = self.system.omega_nom
        self.ok[rows] = True
        self.vn_v[rows] = self.system.v_nom_v
        self.t_s[rows] = 0.0

    def set_load_factors(self, factors: np.ndarray, envs: np.ndarray | None = None) -> None:
        """Scale each load's R and L by its factor ([E, n_load], or rows `envs`) and refresh M⁻¹."""
        rows = slice(None) if envs is None else envs
        sysm = self.system
        self.load_factor[rows] = factors
        self._load_r[rows] = sysm.load_r_ohm * self.load_factor[rows]
        self._load_l[rows] = sysm.load_l_h * self.load_factor[rows]
        if self.solver == "dense":
            m = model.kcl_matrix(sysm.n_bus, sysm.dg_bus, sysm.dg_params[:, DG_COL["l_c"]], sysm.line_from,
                                 sysm.line_to, sysm.line_l_h, sysm.load_bus, self._load_l[rows])
            self._minv[rows] = np.linalg.inv(m)
            return
        net = self.net
        val = np.repeat(net.base[None], self._load_l[rows].shape[0], axis=0)
        if self._loads_share_bus:  # several loads on one bus: their admittances add up in one entry
            np.add.at(val, (slice(None), self._load_pos), 1.0 / self._load_l[rows])
        else:  # the same sums, without add.at's per-element dispatch (this runs every control step)
            val[:, self._load_pos] += 1.0 / self._load_l[rows]
        model.ldl_factor(val, sysm.n_bus, net.upd_ptr, net.upd_t, net.upd_a, net.upd_b, net.colptr)
        self._ldl[rows] = val

    def replicate(self, envs: np.ndarray) -> GridBatch:
        """A new batch whose env j is an exact copy of this batch's env envs[j] (state, time, set-points,
        loads): the scratch space of searches that try set-points without touching the real grid."""
        envs = np.asarray(envs, dtype=np.int64)
        copy = GridBatch(self.system, len(envs), dg_model=self.dg_model, dt_s=self.dt_s, solver=self.solver,
                         flow=self.flow_mode)
        factor = "_minv" if self.solver == "dense" else "_ldl"
        for name in ("x", "t_s", "vn_v", "load_factor", "ok", "_load_r", "_load_l", factor):
            getattr(copy, name)[:] = getattr(self, name)[envs]
        return copy

    # -- time -----------------------------------------------------------------------------------------
    def substeps(self) -> np.ndarray:
        """Per environment, the RK4 steps each step of dt_s is split into ([E] int, 1 for nominal loads).

        A load's current decays at the rate R/L (1/s). One factor for R and L leaves that rate as it is, but
        independent factors change it, up to 3x within the walk's bounds, and a fixed step stable for the
        nominal loads can then diverge (microgrid-20 did, in 0.4 % of its episodes). So an environment takes
        k sub-steps, the fewest that keep its fastest load's rate x (dt_s / k) within what the nominal loads
        take, or STIFF_LOAD_STEP where that is larger (docs/pgsim.md#stiff-loads)."""
        if not self.system.n_load:
            return np.ones(self.n_envs, dtype=np.int64)
        ratio = (self._load_r / self._load_l).max(axis=1) * self.dt_s / self._load_rate_step
        return np.maximum(1, np.ceil(ratio * (1.0 - 1e-9))).astype(np.int64)  # round-off of R·f / L·f stays 1

    def advance(self, n_steps: int, envs: np.ndarray | None = None) -> None:
        """Integrate n_steps fixed steps of dt_s with the current set-points and loads (each split into
        `substeps` RK4 steps where a load is stiffer than the nominal ones).

        Only the environments in `envs` (all by default) move; a diverged one (ok False) stays where it is.
        """
        ok = self.ok.copy()
        if envs is not None:
            ok[:] = False
            ok[envs] = self.ok[envs]
        k = self.substeps()
        low, high = int(k.min()), int(k.max())
        if low == high:  # one sub-step count (the rule): the kernel's in/out mask is the moving envs' new ok
            self._integrate(n_steps, low, ok)
            after = ok
        else:
            after = ok.copy()
            for kk in np.unique(k[ok]).tolist():
                group = ok & (k == kk)
                moving = group.copy()
                self._integrate(n_steps, kk, group)
                after[moving] = group[moving]
        moved = slice(None) if envs is None else envs
        self.ok[moved] = after[moved]
        self.t_s[moved] += n_steps * self.dt_s

    def _integrate(self, n_steps: int, k: int, group: np.ndarray) -> None:
        """n_steps steps of dt_s, each as k RK4 steps, for the envs where group [E] is True; the kernel clears
        group where an env diverges."""
        s = self.system
        if k not in self._flows:
            self._flows[k] = frequency_flow(s, 0.5 * self.dt_s / k, self.flow_mode)
        model.advance(self.x, self.t_s, int(n_steps) * k, self.dt_s / k, self.model, s.dg_params, s.dg_bus,
                      self.vn_v, s.line_from, s.line_to, s.line_r_ohm, s.line_l_h, s.load_bus, self._load_r,
                      self._load_l, self._minv, self._ldl, self.net, s.omega_nom, self._flows[k], s.sec_f_t_on_s,
                      group)

    def steps_for(self, duration_s: float) -> int:
        """Number of integration steps in a duration (s); it must be a whole number of steps."""
        n = round(duration_s / self.dt_s)
        if n < 1 or abs(n * self.dt_s - duration_s) > 1e-9 * max(1.0, duration_s):
            raise InputError(f"duration {duration_s} s is not a whole number of integration steps of {self.dt_s} s")
        return int(n)

    # -- measurements ---------------------------------------------------------------------------------
    def measure(self) -> Measurements:
        """Measurements of every DG at the current state."""
        s = self.system
        ns = self.ns
        dg = self.x[:, : self.o_line].reshape(self.n_envs, s.n_dg, ns)
        delta, p, q = dg[..., 0], dg[..., 1], dg[..., 2]
        io_DQ = dg[..., ns - 2:ns].copy()
        i_D, i_Q = io_DQ[..., 0], io_DQ[..., 1]
        c, sn = np.cos(delta), np.sin(delta)
        io_dq = np.empty_like(io_DQ)
        io_dq[..., 0] = c * i_D + sn * i_Q
        io_dq[..., 1] = -sn * i_D + c * i_Q
        if self.model == model.FULL:
            v_pu = np.hypot(dg[..., 9], dg[..., 10]) / s.v_nom_v
        else:
            v_pu = (self.vn_v - self._n_q * q) / s.v_nom_v
        omega = self.x[:, self.o_w:] - self._m_p * p
        model.bus_voltages(self.x, self.model, s.dg_params, s.dg_bus, self.vn_v, s.line_from, s.line_to,
                           s.line_r_ohm, s.line_l_h, s.load_bus, self._load_r, self._load_l, self._minv,
                           self._ldl, self.net, s.omega_nom, self._vb)
        return Measurements(v_pu=v_pu, f_hz=omega / (2.0 * np.pi), p_w=p.copy(), q_var=q.copy(),
                            delta_rad=delta.copy(), io_dq_a=io_dq, io_DQ_a=io_DQ,
                            vb_DQ_v=self._vb[:, s.dg_bus, :])  # (fancy indexing copies)

    def bus_voltages_dq(self) -> np.ndarray:
        """Every bus's voltage in the common frame, [E, n_bus, 2] (V), at the current state."""
        self.measure()
        return self._vb.copy()

    def trace_samples(self, envs: np.ndarray) -> list[tuple]:
        """One trace row per env in `envs`: (t_s, v_pu, p_w, q_var, f_hz, vn_v) at the current state."""
        m = self.measure()
        return [(self.t_s[e], m.v_pu[e].copy(), m.p_w[e].copy(), m.q_var[e].copy(), m.f_hz[e].copy(),
                 self.vn_v[e].copy()) for e in envs]

    def power_balance(self) -> tuple[np.ndarray, np.ndarray]:
        """(total DG output power, power consumed in loads, lines and coupling inductors), W, per env.

        DG output is measured at the DG terminal (before the coupling inductor), so the two agree at a
        steady state; the difference is the energy still flowing into inductors during transients.
        """
        s = self.system
        ns = self.ns
        dg = self.x[:, : self.o_line].reshape(self.n_envs, s.n_dg, ns)
        m = self.measure()
        if self.model == model.FULL:
            c, sn = np.cos(dg[..., 0]), np.sin(dg[..., 0])
            vo_D = c * dg[..., 9] - sn * dg[..., 10]
            vo_Q = sn * dg[..., 9] + c * dg[..., 10]
        else:
            vd = self.vn_v - s.dg_params[:, DG_COL["n_q"]] * dg[..., 2]
            vo_D, vo_Q = np.cos(dg[..., 0]) * vd, np.sin(dg[..., 0]) * vd
        p_dg = (vo_D * m.io_DQ_a[..., 0] + vo_Q * m.io_DQ_a[..., 1]).sum(axis=1)
        lines = self.x[:, self.o_line:self.o_load].reshape(self.n_envs, s.n_line, 2)
        loads = self.x[:, self.o_load:self.o_w].reshape(self.n_envs, s.n_load, 2)
        i2 = lambda a: (a**2).sum(axis=-1)  # noqa: E731
        p_used = (i2(m.io_DQ_a) * s.dg_params[:, DG_COL["r_c"]]).sum(axis=1)
        p_used = p_used + (i2(lines) * s.line_r_ohm).sum(axis=1) + (i2(loads) * self._load_r).sum(axis=1)
        return p_dg, p_used
