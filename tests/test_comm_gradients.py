"""Differentiable communication: over a k-step window from detached states, agent j's loss has a gradient
in agent i's parameters exactly when d(i, j) <= k - 1 (messaging nets), and only for i = j otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from toy_env import toy_adjacency

from common.config import ModelConfig, TrainConfig
from common.nets import AgentState, build_model, hop_distances
from learner.update import Batch, agent_losses

ADJ = toy_adjacency()  # microgrid-6's agent graph, diameter 3
HOPS = hop_distances(ADJ)
COMMUNICATING = ("powernet", "neurcomm", "commnet", "dial")
INDEPENDENT = ("ia2c", "fprint", "consenet")


def _gradient_reach(algorithm: str, k: int, kernel: bool = False) -> np.ndarray:
    """reach[j, i] = True where d loss_j / d params_i is non-zero; `kernel`: unroll with the compiled window
    kernel where the network has one (train.unroll = kernel), else in torch."""
    torch.manual_seed(0)
    n, b = ADJ.shape[0], 2
    model = build_model(ModelConfig(algorithm=algorithm, hidden=16), ADJ, 9, 10)
    model.window_kernel = kernel
    g = torch.Generator().manual_seed(1)
    fp = torch.softmax(torch.randn(b, n, 10, generator=g), -1)
    state0 = AgentState(torch.randn(b, n, 16, generator=g), torch.randn(b, n, 16, generator=g), fp)
    batch = Batch(obs=torch.randn(k, b, n, 9, generator=g), actions=torch.randint(0, 10, (k, b, n), generator=g),
                  starts=torch.zeros(k, b, dtype=torch.bool), logp=torch.full((k, b, n), -2.3),
                  returns=torch.randn(k, b, n, generator=g), advantages=torch.randn(k, b, n, generator=g),
                  state0=state0)
    losses = agent_losses(model, batch, TrainConfig())["total"]
    params = list(model.parameters())
    reach = np.zeros((n, n), dtype=bool)
    for j in range(n):
        grads = torch.autograd.grad(losses[j], params, retain_graph=True, allow_unused=True)
        for i in range(n):
            reach[j, i] = any(g is not None and bool(g[i].abs().sum() > 0) for g in grads)
    return reach


@pytest.mark.parametrize("kernel", [False, True])
@pytest.mark.parametrize("algorithm", COMMUNICATING)
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_gradient_reaches_agents_within_k_minus_1_hops(algorithm, k, kernel):
    assert np.array_equal(_gradient_reach(algorithm, k, kernel), HOPS <= k - 1)


@pytest.mark.parametrize("kernel", [False, True])
@pytest.mark.parametrize("algorithm", INDEPENDENT)
def test_no_gradient_crosses_agents_without_messages(algorithm, kernel):
    assert np.array_equal(_gradient_reach(algorithm, 4, kernel), np.eye(ADJ.shape[0], dtype=bool))


def test_consenet_couples_agents_by_averaging_lstm_parameters():
    torch.manual_seed(0)
    model = build_model(ModelConfig(algorithm="consenet", hidden=8), ADJ, 9, 10)
    before = model.lstm.weight.detach().clone()
    model.after_optimizer_step()
    closed = ADJ + np.eye(6, dtype=bool)
    expected = torch.stack([before[np.flatnonzero(closed[i])].mean(0) for i in range(6)])
    assert torch.allclose(model.lstm.weight, expected, atol=1e-6)
