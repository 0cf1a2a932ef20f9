"""The learner's recurrent unroll of a window, forward and backward, as two compiled Numba kernels.

At the paper's batch (one or two 20-step windows) the unroll in torch is about 25 small operations per step
and as many again in autograd's backward: at these sizes almost all of an update's time is per-operation
overhead, not arithmetic (docs/algorithms.md#window-kernel). Here the part of the window that must run step
by step (the messages, the LSTM cell and, for fingerprints, the next policy) is one kernel call forward and
one backward, wrapped as a single autograd node: everything before it (the observation encoder and its
share of the gates) and after it (heads, losses) stays in torch, and so do the weight gradients, which are
one batched matmul per layer over the whole window.

It covers the networks whose per-step inputs are built from two optional messages, each a ReLU layer over
the gathered neighbours' values: the fingerprint layer (`fp_fc`, over the neighbours' previous policies,
detached data) and the message layer (`msg_fc`, over the neighbours' previous hidden states, differentiable)
— IA2C, ConseNet and MAPPO (neither), FPrint (fingerprints), NeurComm and PowerNet (both). CommNet and DIAL
(additive messages) keep torch's unroll. The rules are `GraphActorCritic.unroll`'s: the state of an env is
reset where its episode starts, an agent without neighbours gets zero messages, a lost link reads zero and
passes no gradient, padding slots are absent. Values agree with torch's unroll to float32 rounding (tests
check logits, states and every gradient).

Layouts are agent-major as in the torch unroll: T steps, N agents, B envs, H hidden, A actions, D neighbour
slots, G = 4H gates, K = LSTM rows after the observation's. Weights carry a leading row axis of N, or 1
when shared. Matrix-vector products run as row updates (out += x_k w[k, :]) over contiguous rows, so they
vectorise without reordering sums; the backward's products with transposed weights are dot products along
the same rows.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from common.fastexp import exp_f32
from common.nets.layers import window_weight_grad

_FAST = {"contract", "nsz"}  # fused multiply-add and signed-zero freedom; sums keep their order
_REDUCE = {"contract", "nsz", "reassoc"}  # dot products: the sum may be reordered, so it vectorises


@njit(cache=True, fastmath=_FAST)
def _axpy_rows(x, w, out):
    """out[b, :] += sum_k x[b, k] * w[k, :] for every env b, skipping zero inputs (ReLU outputs, lost links,
    padding); each weight row is read once for all envs."""
    for k in range(x.shape[1]):
        for b in range(x.shape[0]):
            xv = x[b, k]
            if xv != 0.0:
                for j in range(out.shape[1]):
                    out[b, j] += xv * w[k, j]


@njit(cache=True, fastmath=_REDUCE)
def _dot_rows(d, w, out):
    """out[b, k] = sum_j d[b, j] * w[k, j] for every env b: the product with w's transpose, read along w's
    contiguous rows (a reduction, so its sum order is the compiler's: fixed for a build, not torch's)."""
    for k in range(w.shape[0]):
        for b in range(d.shape[0]):
            acc = np.float32(0.0)
            for j in range(w.shape[1]):
                acc += d[b, j] * w[k, j]
            out[b, k] = acc


@njit(cache=True, fastmath=_FAST)
def _message(src, i, index, degree, links, xs, w, bias, z, rows, off):
    """Agent i's message layer for every env b: rows[b, off:off + H] = relu(bias + xs[b] w), where xs [B, D*F]
    receives the neighbours' src [N, B, F] slot by slot (a lost link's slot reads 0, padding stays 0); an
    agent without neighbours gets a zero message. z [B, H] is scratch."""
    n_envs, width = src.shape[1], src.shape[2]
    for b in range(n_envs):
        for k in range(xs.shape[1]):
            xs[b, k] = 0.0
    if degree == 0:
        return
    for b in range(n_envs):
        for s in range(degree):
            lk = links[b, s]
            for a in range(width):
                xs[b, s * width + a] = src[index[i, s], b, a] * lk
        for j in range(z.shape[1]):
            z[b, j] = bias[j]
    _axpy_rows(xs, w, z)
    for b in range(n_envs):
        for j in range(z.shape[1]):
            rows[b, off + j] = max(z[b, j], np.float32(0.0))


@njit(cache=True, fastmath=_FAST)
def window_forward(gx, w_lstm, row0, wfp, bfp, wmsg, bmsg, wact, bact, index, degree, links, starts, h0, c0, fp0,
                   use_fp, use_msg, track_fp, h_all, inputs, x_fp, x_msg, acts, tanh_c, c_prev):
    """Unroll T steps. In: gx [T, N, B, G] (the observation's share of the gates plus bias), the LSTM weight
    w_lstm [R, row0 + K, G] (its rows from row0 on multiply the per-step inputs), wfp [R, D*A, H], bfp [R, H],
    wmsg [R, D*H, H], bmsg [R, H], wact [R, H, A], bact [R, A], index/degree (neighbour slots), links
    [T, N, B, D] (1 received, 0 lost), starts [T, B], state h0, c0 [N, B, H] and fp0 [N, B, A].
    Out (kept for the backward): h_all [T, N, B, H], inputs [T, N, B, K] (what multiplies the LSTM rows from
    row0: [fingerprint message, h message, own h]), x_fp / x_msg [T, N, B, D*A / D*H] (gathered inputs),
    acts [T, N, B, G] (i, f, o after the sigmoid, g after the tanh), tanh_c and c_prev [T, N, B, H].
    Returns the final c [N, B, H]."""
    n_steps, n_agents, n_envs, n_gates = gx.shape
    hidden = n_gates // 4
    n_act = fp0.shape[2]
    shared = w_lstm.shape[0] == 1
    h = h0.copy()
    c = c0.copy()
    fp = fp0.copy()
    h_new = np.empty_like(h)
    c_new = np.empty_like(c)
    gates = np.empty((n_envs, n_gates), dtype=np.float32)
    z = np.empty(n_envs * n_gates, dtype=np.float32)  # exponents of the gate nonlinearities (zc: of tanh(c))
    e = np.empty_like(z)
    bits = np.empty(n_envs * n_gates, dtype=np.int32)
    zc = np.empty(n_envs * hidden, dtype=np.float32)
    ec = np.empty_like(zc)
    zm = np.empty((n_envs, hidden), dtype=np.float32)  # a message layer's pre-activation
    logits = np.empty((n_envs, n_act), dtype=np.float32)
    uniform = np.float32(1.0 / n_act)
    m_off = hidden if use_fp else 0
    h_off = m_off + (hidden if use_msg else 0)
    for t in range(n_steps):
        for b in range(n_envs):
            if starts[t, b]:
                for i in range(n_agents):
                    for j in range(hidden):
                        h[i, b, j] = 0.0
                        c[i, b, j] = 0.0
                    for a in range(n_act):
                        fp[i, b, a] = uniform
        for i in range(n_agents):
            r = 0 if shared else i
            rows = inputs[t, i]  # [B, K]
            for b in range(n_envs):
                for k in range(rows.shape[1]):
                    rows[b, k] = 0.0
            if use_fp:
                _message(fp, i, index, degree[i], links[t, i], x_fp[t, i], wfp[r], bfp[r], zm, rows, 0)
            if use_msg:
                _message(h, i, index, degree[i], links[t, i], x_msg[t, i], wmsg[r], bmsg[r], zm, rows, m_off)
            for b in range(n_envs):
                for k in range(hidden):
                    rows[b, h_off + k] = h[i, b, k]
                for j in range(n_gates):
                    gates[b, j] = gx[t, i, b, j]
            _axpy_rows(rows, w_lstm[r, row0:], gates)
            for b in range(n_envs):  # e^-x for the sigmoid gates (i, f, o), e^-2x for g
                for j in range(n_gates):
                    z[b * n_gates + j] = -gates[b, j]
                for j in range(2 * hidden, 3 * hidden):
                    z[b * n_gates + j] *= np.float32(2.0)
            exp_f32(z, e, bits)
            for b in range(n_envs):
                act = acts[t, i, b]
                row = b * n_gates
                for j in range(hidden):
                    ig = np.float32(1.0) / (np.float32(1.0) + e[row + j])
                    fg = np.float32(1.0) / (np.float32(1.0) + e[row + hidden + j])
                    gg = np.float32(2.0) / (np.float32(1.0) + e[row + 2 * hidden + j]) - np.float32(1.0)
                    cn = fg * c[i, b, j] + ig * gg
                    act[j] = ig
                    act[hidden + j] = fg
                    act[2 * hidden + j] = gg
                    act[3 * hidden + j] = np.float32(1.0) / (np.float32(1.0) + e[row + 3 * hidden + j])
                    c_prev[t, i, b, j] = c[i, b, j]
                    c_new[i, b, j] = cn
                    zc[b * hidden + j] = np.float32(-2.0) * cn
            exp_f32(zc, ec, bits)
            for b in range(n_envs):
                for j in range(hidden):
                    tc = np.float32(2.0) / (np.float32(1.0) + ec[b * hidden + j]) - np.float32(1.0)
                    tanh_c[t, i, b, j] = tc
                    h_new[i, b, j] = acts[t, i, b, 3 * hidden + j] * tc
        for i in range(n_agents):
            for b in range(n_envs):
                for j in range(hidden):
                    h[i, b, j] = h_new[i, b, j]
                    c[i, b, j] = c_new[i, b, j]
                    h_all[t, i, b, j] = h_new[i, b, j]
        if track_fp and t + 1 < n_steps:  # the next step's fingerprints: this step's policies
            for i in range(n_agents):
                r = 0 if shared else i
                for b in range(n_envs):
                    for a in range(n_act):
                        logits[b, a] = bact[r, a]
                _axpy_rows(h[i], wact[r], logits)
                for b in range(n_envs):
                    top = logits[b, 0]
                    for a in range(1, n_act):
                        top = max(top, logits[b, a])
                    total = np.float32(0.0)
                    for a in range(n_act):
                        logits[b, a] = np.exp(logits[b, a] - top)
                        total += logits[b, a]
                    for a in range(n_act):
                        fp[i, b, a] = logits[b, a] / total
    return c


@njit(cache=True, fastmath=_FAST)
def window_backward(dh_all, dc_last, w_lstm, row0, wmsg, index, degree, links, starts, inputs, acts, tanh_c,
                    c_prev, use_fp, use_msg, d_gates, dz_fp, dz_msg):
    """Back through the window. In: dh_all [T, N, B, H] (the loss's gradient of each step's h), dc_last
    [N, B, H], the weights w_lstm (from row row0 on) and wmsg, and the forward's records.
    Out: d_gates [T, N, B, G] (gradient of the pre-activation gates: also that of gx), dz_fp / dz_msg
    [T, N, B, H] (gradients of the message layers' pre-ReLU outputs). The weight gradients follow from these
    and the recorded inputs in one matmul each (`WindowRecurrence.backward`)."""
    n_steps, n_agents, n_envs, n_gates = d_gates.shape
    hidden = n_gates // 4
    shared = w_lstm.shape[0] == 1
    m_off = hidden if use_fp else 0
    h_off = m_off + (hidden if use_msg else 0)
    n_rows = inputs.shape[3]
    dh_next = np.zeros((n_agents, n_envs, hidden), dtype=np.float32)  # from step t + 1 into step t's h
    dc_next = dc_last.copy()
    dh_prev = np.empty_like(dh_next)
    dc_prev = np.empty_like(dh_next)
    d_in = np.empty((n_envs, n_rows), dtype=np.float32)
    d_x = np.empty((n_envs, wmsg.shape[1]), dtype=np.float32)
    for t in range(n_steps - 1, -1, -1):
        for i in range(n_agents):
            for b in range(n_envs):
                for k in range(hidden):
                    dh_prev[i, b, k] = 0.0
        for i in range(n_agents):
            r = 0 if shared else i
            dg_all = d_gates[t, i]  # [B, G]
            for b in range(n_envs):
                act = acts[t, i, b]
                dg = dg_all[b]
                for j in range(hidden):
                    ig = act[j]
                    fg = act[hidden + j]
                    gg = act[2 * hidden + j]
                    og = act[3 * hidden + j]
                    tc = tanh_c[t, i, b, j]
                    dh = dh_all[t, i, b, j] + dh_next[i, b, j]
                    dc = dc_next[i, b, j] + dh * og * (np.float32(1.0) - tc * tc)
                    dg[j] = dc * gg * ig * (np.float32(1.0) - ig)
                    dg[hidden + j] = dc * c_prev[t, i, b, j] * fg * (np.float32(1.0) - fg)
                    dg[2 * hidden + j] = dc * ig * (np.float32(1.0) - gg * gg)
                    dg[3 * hidden + j] = dh * tc * og * (np.float32(1.0) - og)
                    dc_prev[i, b, j] = dc * fg
            _dot_rows(dg_all, w_lstm[r, row0:], d_in)
            rows = inputs[t, i]
            if use_fp:  # fingerprints are data: the gradient stops at the layer's weights
                for b in range(n_envs):
                    for j in range(hidden):
                        dz_fp[t, i, b, j] = d_in[b, j] if rows[b, j] > 0.0 else np.float32(0.0)
            if use_msg:
                dz = dz_msg[t, i]
                for b in range(n_envs):
                    for j in range(hidden):
                        dz[b, j] = d_in[b, m_off + j] if rows[b, m_off + j] > 0.0 else np.float32(0.0)
                if degree[i] > 0:
                    _dot_rows(dz, wmsg[r], d_x)
                    for b in range(n_envs):
                        for s in range(degree[i]):
                            lk = links[t, i, b, s]
                            if lk != 0.0:
                                nb = index[i, s]
                                for k in range(hidden):
                                    dh_prev[nb, b, k] += d_x[b, s * hidden + k] * lk
            for b in range(n_envs):
                for k in range(hidden):
                    dh_prev[i, b, k] += d_in[b, h_off + k]
        for b in range(n_envs):
            if starts[t, b]:  # the state entering this step was reset: nothing flows to the one before
                for i in range(n_agents):
                    for k in range(hidden):
                        dh_prev[i, b, k] = 0.0
                        dc_prev[i, b, k] = 0.0
        for i in range(n_agents):
            for b in range(n_envs):
                for k in range(hidden):
                    dh_next[i, b, k] = dh_prev[i, b, k]
                    dc_next[i, b, k] = dc_prev[i, b, k]


def _np(x: torch.Tensor) -> np.ndarray:
    """A float32 C-contiguous view of a CPU tensor (a copy only where it is not one already)."""
    return np.ascontiguousarray(x.detach().numpy(), dtype=np.float32)


class WindowRecurrence(torch.autograd.Function):
    """h_all [T, N, B, H] and the final c [N, B, H] of a window from gx and the recurrent weights, through
    `window_forward`; `window_backward` gives the gradients of gx and of every weight it read (none reach the
    start state, which the learner detaches, or the actor head, read for detached fingerprints only).

    `w_lstm` is the whole LSTM weight; its rows from graph["row0"] on are the recurrent part (the rows above
    multiply the observation features into gx, outside this node, and get a zero gradient here)."""

    @staticmethod
    def forward(ctx, gx, w_lstm, wfp, bfp, wmsg, bmsg, graph):
        g = graph
        n_steps, n_agents, n_envs, n_gates = gx.shape
        hidden = n_gates // 4
        width = g["index"].shape[1]
        row0 = g["row0"]
        f32 = np.float32
        h_all = np.empty((n_steps, n_agents, n_envs, hidden), f32)
        inputs = np.empty((n_steps, n_agents, n_envs, w_lstm.shape[1] - row0), f32)
        x_fp = np.empty((n_steps, n_agents, n_envs, width * g["fp0"].shape[2] if g["use_fp"] else 0), f32)
        x_msg = np.empty((n_steps, n_agents, n_envs, width * hidden if g["use_msg"] else 0), f32)
        acts = np.empty((n_steps, n_agents, n_envs, n_gates), f32)
        tanh_c = np.empty((n_steps, n_agents, n_envs, hidden), f32)
        c_prev = np.empty_like(tanh_c)
        w_np, wmsg_np = _np(w_lstm), _np(wmsg)
        c_last = window_forward(_np(gx), w_np, row0, _np(wfp), _np(bfp), wmsg_np, _np(bmsg), g["wact"], g["bact"],
                                g["index"], g["degree"], g["links"], g["starts"], g["h0"], g["c0"], g["fp0"],
                                g["use_fp"], g["use_msg"], g["track_fp"], h_all, inputs, x_fp, x_msg, acts,
                                tanh_c, c_prev)
        ctx.graph = g
        ctx.records = (inputs, x_fp, x_msg, acts, tanh_c, c_prev)
        ctx.weights = (w_np, wmsg_np)  # views of the parameters, as torch's unroll keeps its detached weights
        ctx.set_materialize_grads(False)
        return torch.from_numpy(h_all), torch.from_numpy(c_last)

    @staticmethod
    def backward(ctx, dh_all, dc_last):
        g = ctx.graph
        inputs, x_fp, x_msg, acts, tanh_c, c_prev = ctx.records
        w_np, wmsg_np = ctx.weights
        row0 = g["row0"]
        shape = acts.shape
        n_steps, n_agents, n_envs, _ = shape
        hidden = tanh_c.shape[3]
        f32 = np.float32
        dh = np.zeros(tanh_c.shape, f32) if dh_all is None else _np(dh_all)
        dc = np.zeros(tanh_c.shape[1:], f32) if dc_last is None else _np(dc_last)
        d_gates = np.empty(shape, f32)
        dz_fp = np.zeros((n_steps, n_agents, n_envs, hidden if g["use_fp"] else 0), f32)
        dz_msg = np.zeros((n_steps, n_agents, n_envs, hidden if g["use_msg"] else 0), f32)
        window_backward(dh, dc, w_np, row0, wmsg_np, g["index"], g["degree"], g["links"], g["starts"], inputs, acts,
                        tanh_c, c_prev, g["use_fp"], g["use_msg"], d_gates, dz_fp, dz_msg)
        rows = w_np.shape[0]
        d_gates_t = torch.from_numpy(d_gates)

        def weight_grad(x: np.ndarray, d: torch.Tensor) -> torch.Tensor:
            return window_weight_grad(torch.from_numpy(x), d, rows)

        def bias_grad(d: torch.Tensor) -> torch.Tensor:
            per_agent = d.sum(dim=(0, 2))  # [N, out]
            return per_agent.sum(0, keepdim=True) if rows == 1 else per_agent

        d_lstm = None
        if ctx.needs_input_grad[1]:
            d_lstm = d_gates_t.new_zeros(w_np.shape)
            d_lstm[:, row0:] = weight_grad(inputs, d_gates_t)
        d_wfp = d_bfp = d_wmsg = d_bmsg = None
        if g["use_fp"]:
            dz = torch.from_numpy(dz_fp)
            d_wfp, d_bfp = weight_grad(x_fp, dz), bias_grad(dz)
        if g["use_msg"]:
            dz = torch.from_numpy(dz_msg)
            d_wmsg, d_bmsg = weight_grad(x_msg, dz), bias_grad(dz)
        return d_gates_t, d_lstm, d_wfp, d_bfp, d_wmsg, d_bmsg, None
