"""The compiled window unroll (common/nets/window_kernel.py, train.unroll = kernel) against torch's unroll: the
same logits, hidden states, final state and parameter gradients to float32 rounding, for every network it
covers, with and without shared weights and lost links; the networks it does not cover unroll in torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.config import ModelConfig, TrainConfig, load_config
from common.errors import InputError
from common.nets import build_model
from launch.bench_learner import synthetic_rollout
from learner.update import make_optimizer, update

KERNEL = ("ia2c", "consenet", "mappo", "fprint", "neurcomm", "powernet")
TORCH_ONLY = ("commnet", "dial")
OBS, ACTIONS, HIDDEN = 9, 10, 16


def _graph() -> np.ndarray:
    """Seven agents with degrees 0..3: an isolated agent (zero messages), padding slots, several neighbours."""
    adj = np.zeros((7, 7), dtype=bool)
    for i, j in [(0, 1), (1, 2), (2, 3), (3, 4), (1, 4), (4, 5)]:
        adj[i, j] = adj[j, i] = True
    return adj


def _model(algorithm: str, shared: bool = False):
    torch.manual_seed(1)
    model = build_model(ModelConfig(algorithm=algorithm, hidden=HIDDEN, share_weights=shared), _graph(), OBS,
                        ACTIONS)
    with torch.no_grad():  # random biases and larger weights, so that every path shows in the output
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def _window(model, steps: int = 9, batch: int = 3, lossy: bool = False):
    g = torch.Generator().manual_seed(2)
    n = model.n_agents
    obs = torch.randn(steps, batch, n, OBS, generator=g)
    starts = torch.zeros(steps, batch, dtype=torch.bool)
    starts[0, 0] = starts[4, 1] = starts[6, 2] = True  # episodes start inside the window
    state = model.initial_state(batch)
    state = type(state)(torch.randn(batch, n, HIDDEN, generator=g), torch.randn(batch, n, HIDDEN, generator=g),
                        torch.softmax(torch.randn(batch, n, ACTIONS, generator=g), -1))
    links = torch.rand(steps, batch, n, model.neighbours.width, generator=g) > 0.3 if lossy else None
    return obs, starts, state, links


def _run(model, window, kernel: bool):
    """Logits, h, final state and every parameter's gradient of a loss reading logits, h and the final c."""
    model.window_kernel = kernel
    model.zero_grad(set_to_none=True)
    logits, hs, final = model.unroll(*window)
    g = torch.Generator().manual_seed(3)
    loss = (logits * torch.randn(logits.shape, generator=g)).sum() + (hs * torch.randn(hs.shape, generator=g)).sum()
    (loss + 0.3 * final.c.sum()).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), hs.detach(), final, grads


@pytest.mark.parametrize("algorithm", KERNEL)
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("lossy", [False, True])
def test_the_kernel_unroll_is_torchs_unroll_to_float_rounding(algorithm, shared, lossy) -> None:
    model = _model(algorithm, shared)
    window = _window(model, lossy=lossy)
    assert model.window_messages is not None
    model.window_kernel = True
    assert model._kernel_applies(window[0], window[2])
    ref, got = _run(model, window, kernel=False), _run(model, window, kernel=True)
    for a, b in zip(ref[:2], got[:2], strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=2e-5)
    for a, b in zip(ref[2], got[2], strict=True):  # final h, c and fingerprints
        torch.testing.assert_close(b, a, rtol=0, atol=2e-5)
    assert ref[3].keys() == got[3].keys()
    for name, a in ref[3].items():
        scale = float(a.abs().max())
        assert scale > 0.0, name  # every parameter the loss reads gets a gradient, so the check means something
        torch.testing.assert_close(got[3][name], a, rtol=0, atol=2e-5 * scale, msg=name)


@pytest.mark.parametrize("algorithm", TORCH_ONLY)
def test_networks_with_additive_messages_unroll_in_torch(algorithm) -> None:
    model = _model(algorithm)
    window = _window(model)
    model.window_kernel = True
    assert model.window_messages is None and not model._kernel_applies(window[0], window[2])
    ref, got = _run(model, window, kernel=False), _run(model, window, kernel=True)
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=0)
    for name, a in ref[3].items():
        torch.testing.assert_close(got[3][name], a, rtol=0, atol=0, msg=name)


def test_the_kernel_is_skipped_for_float64_models() -> None:
    model = _model("powernet").double()
    obs, starts, state, links = _window(model)
    model.window_kernel = True
    assert not model._kernel_applies(obs.double(), state)


def test_a_start_state_that_needs_a_gradient_gets_it_from_torchs_unroll() -> None:
    model = _model("powernet")
    obs, starts, state, links = _window(model)
    model.window_kernel = True
    h0 = state.h.clone().requires_grad_(True)
    state = type(state)(h0, state.c, state.fp)
    assert not model._kernel_applies(obs, state)
    logits, _, _ = model.unroll(obs, starts, state, links)
    (grad,) = torch.autograd.grad(logits[1].sum(), h0)
    assert grad[2].abs().max() > 0.0  # env 2 starts no episode before step 6: its h0 reaches step 1


@pytest.mark.parametrize("algorithm", ["powernet", "ia2c"])
def test_an_update_with_the_kernel_is_the_torch_update_to_float_rounding(algorithm) -> None:
    after = {}
    for unroll in ("torch", "kernel"):
        cfg = TrainConfig(unroll=unroll, optimizer="adam")
        model = _model(algorithm)
        model.window_kernel = unroll == "kernel"
        opt = make_optimizer(model, cfg)
        rollout = synthetic_rollout(2, model.n_agents, OBS, ACTIONS, HIDDEN, np.random.default_rng(0))
        stats = [update(model, opt, rollout, cfg) for _ in range(3)]
        after[unroll] = ({k: v.clone() for k, v in model.state_dict().items()}, stats)
    (ref, ref_stats), (got, got_stats) = after["torch"], after["kernel"]
    for name, value in ref.items():
        torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-5, msg=name)
    for a, b in zip(ref_stats, got_stats, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)


def test_warming_the_kernel_changes_no_parameter_gradient_or_random_stream() -> None:
    model = _model("powernet")
    model.window_kernel = True
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    model.warm_window_kernel()
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in model.parameters())
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_train_unroll_is_read_and_checked(tmp_path) -> None:
    from launch.local_trainer import prepare_run

    assert load_config(None).train.unroll == "kernel"
    with pytest.raises(InputError, match="train.unroll"):
        load_config(None, ['train.unroll="fast"'])
    for unroll in ("kernel", "torch"):
        cfg = load_config("configs/powernet.toml", [f'train.unroll="{unroll}"'])
        _, model = prepare_run(cfg, tmp_path / unroll, resume=False)
        assert model.window_kernel is (unroll == "kernel")


def test_bench_learner_times_either_unroll() -> None:
    from launch.bench_learner import run_bench

    for unroll in ("kernel", "torch"):
        report = run_bench(["microgrid-6"], "powernet,commnet", [1], repeats=1, threads=1, unroll=unroll)
        assert report["unroll"] == unroll
        assert {(r["algorithm"], r["envs"]) for r in report["results"]} == {("powernet", 1), ("commnet", 1)}
        assert all(r["update_ms"] > 0 for r in report["results"])
