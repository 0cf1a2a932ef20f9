"""The acting step as one compiled Numba kernel over the networks' stacked weights (see `actor.policy`).

At acting sizes (a few agents, 1-16 envs, H = 64) a step is a few hundred small matrix-vector products: in a
framework almost all of its time is per-operation overhead. Here a step is one call: every layer is a loop
over the rows of the agent's weight matrix that skips zero inputs (ReLU outputs, padding, one-hots), so a
weight row is read once for all envs of the batch. Plain functions over arrays, float32 weights and
activations (float64 for the softmax sums and the sampling), compiled once and cached on disk.

The rules match `common.nets` (docs/algorithms.md, "Acting"): neighbour slots beyond an agent's degree are
absent (they read zero-padding in torch), messages of an agent without neighbours are zero, and the
action is drawn by the inverse-CDF rule of `actor.sampler.sample_from_probs`. A lost link (`links[b, n, s]`
False, docs/scenarios.md#message-loss) is absent like a padding slot in env b: neighbour slot s's observation
and messages are skipped, and CommNet's mean is over the received slots.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from common.fastexp import exp_f32 as _exp

# mode[] entries of `act_step`
NEIGHBOUR_OBS, FP_MESSAGE, H_MESSAGE, ADDITIVE, OWN_ACTION, GLOBAL_CRITIC = range(6)
H_NONE, H_GATHER, H_MEAN = 0, 1, 2  # values of mode[H_MESSAGE]


@njit(cache=True, fastmath={"contract", "reassoc", "nsz"})
def _acc(x, w, row0, out):
    """out[b, :] += sum_k x[b, k] * w[row0 + k, :], skipping zero inputs."""
    for k in range(x.shape[1]):
        row = row0 + k
        for b in range(x.shape[0]):
            xv = x[b, k]
            if xv != 0.0:
                for j in range(out.shape[1]):
                    out[b, j] += xv * w[row, j]


@njit(cache=True, fastmath={"contract", "reassoc", "nsz"})
def _acc_links(x, w, row0, out, links, n, s):
    """`_acc` for neighbour slot s of agent n: env b adds its input only where links[b, n, s] (received)."""
    for k in range(x.shape[1]):
        row = row0 + k
        for b in range(x.shape[0]):
            xv = x[b, k]
            if xv != 0.0 and links[b, n, s]:
                for j in range(out.shape[1]):
                    out[b, j] += xv * w[row, j]


@njit(cache=True)
def _set_bias(out, bias):
    for b in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[b, j] = bias[j]


@njit(cache=True)
def _relu(x):
    for b in range(x.shape[0]):
        for j in range(x.shape[1]):
            if x[b, j] < 0.0:
                x[b, j] = 0.0


@njit(cache=True)
def _cell(gates, c_prev, c_new, h_new):
    """LSTM gates [B, 4H] (order i, f, g, o) and c_prev [B, H] -> c_new, h_new [B, H]; sigmoid(x) =
    1 / (1 + e^-x) and tanh(x) = 2 / (1 + e^-2x) - 1 with the vectorised `_exp`."""
    n_envs, hidden = c_prev.shape
    f32 = np.float32
    z = np.empty(gates.size, dtype=np.float32)  # -x for the sigmoid gates, -2x for g
    for b in range(n_envs):
        for k in range(4 * hidden):
            z[b * 4 * hidden + k] = -gates[b, k]
        for k in range(2 * hidden, 3 * hidden):
            z[b * 4 * hidden + k] *= f32(2.0)
    e = np.empty(gates.size, dtype=np.float32)
    bits = np.empty(gates.size, dtype=np.int32)
    _exp(z, e, bits)
    zc = np.empty(n_envs * hidden, dtype=np.float32)  # -2c, for tanh(c)
    for b in range(n_envs):
        row = b * 4 * hidden
        for k in range(hidden):
            i = f32(1.0) / (f32(1.0) + e[row + k])
            f = f32(1.0) / (f32(1.0) + e[row + hidden + k])
            g = f32(2.0) / (f32(1.0) + e[row + 2 * hidden + k]) - f32(1.0)
            c = f * c_prev[b, k] + i * g
            c_new[b, k] = c
            zc[b * hidden + k] = f32(-2.0) * c
    ec = np.empty(zc.size, dtype=np.float32)
    _exp(zc, ec, bits)
    for b in range(n_envs):
        row = b * 4 * hidden
        for k in range(hidden):
            o = f32(1.0) / (f32(1.0) + e[row + 3 * hidden + k])
            h_new[b, k] = o * (f32(2.0) / (f32(1.0) + ec[b * hidden + k]) - f32(1.0))


@njit(cache=True)
def _encode(n, wi, obs_am, ids, cnt, nb, links, neighbour_obs, obs_w, obs_b, enc):
    """enc = relu(W [o_n, id_n, (o_j, id_j) for neighbours j] + b), all envs of agent n; a lost link's slot
    (observation and id) is absent in that env."""
    n_obs, n_ids = obs_am.shape[2], ids.shape[1]
    width = n_obs + n_ids
    _set_bias(enc, obs_b[wi])
    slots = 1 + cnt[n] if neighbour_obs else 1
    for s in range(slots):
        j = n if s == 0 else nb[n, s - 1]
        if s == 0:
            _acc(obs_am[j], obs_w[wi], 0, enc)
        else:
            _acc_links(obs_am[j], obs_w[wi], s * width, enc, links, n, s - 1)
        if n_ids:  # the agent-id one-hot: row (slot base + O + j) once per env
            row = s * width + n_obs + j
            for b in range(enc.shape[0]):
                if s == 0 or links[b, n, s - 1]:
                    for k in range(enc.shape[1]):
                        enc[b, k] += obs_w[wi, row, k]
    _relu(enc)


@njit(cache=True)
def _messages(n, wi, mode, h0, fp0, cnt, nb, links, fp_w, fp_b, msg_w, msg_b, p, m):
    """The fingerprint message p and the hidden-state message m of agent n (zero without neighbours); a lost
    link's slot is absent in that env, and the mean is over the received slots (zero when none)."""
    degree = cnt[n]
    if mode[FP_MESSAGE]:
        p[:] = 0.0
        if degree > 0:
            _set_bias(p, fp_b[wi])
            for s in range(degree):
                _acc_links(fp0[nb[n, s]], fp_w[wi], s * fp0.shape[2], p, links, n, s)
            _relu(p)
    kind = mode[H_MESSAGE]
    m[:] = 0.0
    if kind != H_NONE and degree > 0:
        _set_bias(m, msg_b[wi])
        if kind == H_GATHER:
            for s in range(degree):
                _acc_links(h0[nb[n, s]], msg_w[wi], s * h0.shape[2], m, links, n, s)
            _relu(m)
        else:  # the mean over the received neighbours, then a linear layer (no ReLU)
            mean = np.zeros((h0.shape[1], h0.shape[2]), dtype=np.float32)
            for b in range(h0.shape[1]):
                received = 0
                for s in range(degree):
                    received += links[b, n, s]
                if received == 0:
                    continue
                weight = np.float32(1.0 / received)
                for s in range(degree):
                    if links[b, n, s]:
                        mean[b] += h0[nb[n, s], b] * weight
            _acc(mean, msg_w[wi], 0, m)


@njit(cache=True)
def _lstm(n, wi, mode, enc, p, m, h0, c0, fp0, lstm_w, lstm_b, gates, c_new, h_new, h_out, c_out):
    """The LSTM step of agent n for every env: new h, c into h_out[:, n], c_out[:, n]."""
    hidden = h0.shape[2]
    _set_bias(gates, lstm_b[wi])
    if mode[ADDITIVE]:  # x + messages share the first rows (CommNet, DIAL)
        x = enc + m
        if mode[OWN_ACTION]:  # DIAL: the one-hot of the agent's previous greedy action
            for b in range(x.shape[0]):
                x[b, np.argmax(fp0[n, b])] += 1.0
        _acc(x, lstm_w[wi], 0, gates)
        rows = hidden
    else:
        _acc(enc, lstm_w[wi], 0, gates)
        rows = hidden
        if mode[FP_MESSAGE]:
            _acc(p, lstm_w[wi], rows, gates)
            rows += hidden
        if mode[H_MESSAGE] != H_NONE:
            _acc(m, lstm_w[wi], rows, gates)
            rows += hidden
    _acc(h0[n], lstm_w[wi], rows, gates)
    _cell(gates, c0[n], c_new, h_new)
    for b in range(gates.shape[0]):
        h_out[b, n] = h_new[b]
        c_out[b, n] = c_new[b]


@njit(cache=True)
def _policy(n, wi, h_out, u, act_w, act_b, logits, fp_out, actions, logp):
    """Logits, softmax policy (the next fingerprint), sampled action and its log-probability of agent n."""
    n_actions = logits.shape[2]
    for b in range(h_out.shape[0]):
        row = logits[b, n]
        row[:] = act_b[wi]
        for k in range(h_out.shape[2]):
            hv = h_out[b, n, k]
            if hv != 0.0:
                for a in range(n_actions):
                    row[a] += hv * act_w[wi, k, a]
        top = row.max()
        total = 0.0
        for a in range(n_actions):
            total += np.exp(np.float64(row[a] - top))
        for a in range(n_actions):
            fp_out[b, n, a] = np.float32(np.exp(np.float64(row[a] - top)) / total)
        cdf = 0.0  # inverse CDF over the stored probabilities, as actor.sampler.sample_from_probs
        for a in range(n_actions):
            cdf += np.float64(fp_out[b, n, a])
        target = u[b, n] * cdf
        chosen = n_actions - 1
        cdf = 0.0
        for a in range(n_actions - 1):
            cdf += np.float64(fp_out[b, n, a])
            if target < cdf:
                chosen = a
                break
        actions[b, n] = chosen
        logp[b, n] = np.float32(np.float64(row[chosen] - top) - np.log(total))


@njit(cache=True)
def _values(h_out, actions, cnt, nb, crit_w, crit_b, values):
    """The neighbourhood critic V_i = w_i . [h_i, onehot(a_j) for neighbours j] + b_i."""
    n_envs, n_agents, hidden = h_out.shape
    n_actions = (crit_w.shape[1] - hidden) // nb.shape[1]
    for b in range(n_envs):
        for n in range(n_agents):
            wi = 0 if crit_w.shape[0] == 1 else n
            v = crit_b[wi, 0]
            for k in range(hidden):
                v += h_out[b, n, k] * crit_w[wi, k]
            for s in range(cnt[n]):
                v += crit_w[wi, hidden + s * n_actions + actions[b, nb[n, s]]]
            values[b, n] = v


@njit(cache=True)
def _dense_relu(x, w, b, out, relu):
    """out[b, j] = b[j] + sum_k x[b, k] w[j, k] (a torch Linear's [out, in] weight), then ReLU if `relu`."""
    for e in range(x.shape[0]):
        for j in range(w.shape[0]):
            v = b[j]
            for k in range(w.shape[1]):
                v += x[e, k] * w[j, k]
            out[e, j] = max(v, np.float32(0.0)) if relu else v


@njit(cache=True)
def global_values(obs, w1, b1, w2, b2, w3, b3, values):
    """The centralised critic (MAPPO): values [B, N] = W3 relu(W2 relu(W1 s + b1) + b2) + b3 with the global
    state s = obs [B, N, O] flattened per env."""
    n_envs = obs.shape[0]
    state = np.ascontiguousarray(obs).reshape(n_envs, -1)
    z1 = np.empty((n_envs, w1.shape[0]), dtype=np.float32)
    z2 = np.empty((n_envs, w2.shape[0]), dtype=np.float32)
    _dense_relu(state, w1, b1, z1, True)
    _dense_relu(z1, w2, b2, z2, True)
    _dense_relu(z2, w3, b3, values, False)


@njit(cache=True)
def act_step(obs, starts, h, c, fp, u, links, nb, cnt, ids, mode,
             obs_w, obs_b, fp_w, fp_b, msg_w, msg_b, lstm_w, lstm_b, act_w, act_b, crit_w, crit_b,
             h_out, c_out, fp_out, logits, actions, logp, values):
    """One acting step for all agents of all envs.

    obs [B, N, O], starts [B] (the state of those envs is reset first), h, c [B, N, H], fp [B, N, A],
    u [B, N] uniforms; links [B, N, D] bool, True where agent n received neighbour slot s's message (all True
    without message loss); nb [N, D] neighbour indices (the first cnt[n] are real), ids [N, N or 0] agent ids
    (shared weights), mode[6] the algorithm's flags (with GLOBAL_CRITIC set, `values` is left for
    `global_values`). Weights as `common.nets` stacks them ([1 or N, in, out];
    the critic's [.., in]). Writes the new state, logits, actions, their log-probabilities and values."""
    n_envs, n_agents, _ = obs.shape
    hidden, n_actions = h.shape[2], fp.shape[2]
    obs_am = np.ascontiguousarray(obs.transpose(1, 0, 2))
    h0 = np.zeros((n_agents, n_envs, hidden), dtype=np.float32)  # agent-major state after the resets
    c0 = np.zeros((n_agents, n_envs, hidden), dtype=np.float32)
    fp0 = np.full((n_agents, n_envs, n_actions), np.float32(1.0 / n_actions), dtype=np.float32)
    for b in range(n_envs):
        if not starts[b]:
            for n in range(n_agents):
                h0[n, b] = h[b, n]
                c0[n, b] = c[b, n]
                fp0[n, b] = fp[b, n]
    enc = np.empty((n_envs, hidden), dtype=np.float32)
    p = np.zeros((n_envs, hidden), dtype=np.float32)
    m = np.zeros((n_envs, hidden), dtype=np.float32)
    gates = np.empty((n_envs, 4 * hidden), dtype=np.float32)
    c_new = np.empty((n_envs, hidden), dtype=np.float32)
    h_new = np.empty((n_envs, hidden), dtype=np.float32)
    for n in range(n_agents):
        wi = 0 if lstm_w.shape[0] == 1 else n
        _encode(n, wi, obs_am, ids, cnt, nb, links, mode[NEIGHBOUR_OBS], obs_w, obs_b, enc)
        _messages(n, wi, mode, h0, fp0, cnt, nb, links, fp_w, fp_b, msg_w, msg_b, p, m)
        _lstm(n, wi, mode, enc, p, m, h0, c0, fp0, lstm_w, lstm_b, gates, c_new, h_new, h_out, c_out)
        _policy(n, wi, h_out, u, act_w, act_b, logits, fp_out, actions, logp)
    if not mode[GLOBAL_CRITIC]:
        _values(h_out, actions, cnt, nb, crit_w, crit_b, values)
