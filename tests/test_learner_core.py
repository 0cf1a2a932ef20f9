"""The learner core shared by the local trainer and the learner service: one checkpoint format (older ones
still resume, broken ones are refused with one line), every update diagnostic in metrics.csv, resume of
split env groups, fine-tuning from another run's weights (train.init_from), and the layering that keeps the
learner free of the simulator."""

from __future__ import annotations

import ast
import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_helpers import assert_same_params
from click.testing import CliRunner

from common.config import load_config
from common.errors import InputError
from launch.cli import main
from launch.local_trainer import train_local
from learner.checkpoint import load_checkpoint, save_checkpoint
from learner.core import CHECKPOINT_FORMAT, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["train.num_envs=2", "train.checkpoint_every=1000"]


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as fh:
        return list(csv.DictReader(fh))


def _split_and_full(tmp_path: Path, overrides: list[str]) -> tuple[Path, Path]:
    """Train 80 steps, then resume to 160 in 'split'; train 160 straight in 'full'; return both dirs."""
    train_local(load_config("configs/ia2c.toml", SHORT + overrides + ["train.steps=80"]), tmp_path / "split")
    return tmp_path / "split", tmp_path / "full"


def test_resume_of_split_env_groups_continues_every_group_sampler(tmp_path):
    # two env groups (as two sync actors): each group's sampler is checkpointed and continued, so the
    # resumed run is bit-identical (earlier, the second group's sampler restarted from its seed)
    split, full = _split_and_full(tmp_path, ["train.env_groups=2"])
    assert sorted(load_checkpoint(split / "checkpoints" / "latest.pt")["streams"]) == [0, 1]
    cfg = load_config("configs/ia2c.toml", SHORT + ["train.env_groups=2", "train.steps=160"])
    train_local(cfg, split, resume=True)
    train_local(cfg, full)
    assert_same_params(full / "checkpoints" / "latest.pt", split / "checkpoints" / "latest.pt", atol=0.0)


def _as_old_local_checkpoint(ckpt: dict) -> dict:
    """The payload the local trainer wrote before the learner core (one stream, sampler inside rng)."""
    stream = ckpt["streams"][0]
    rng = {**ckpt["rng"], "sampler": torch.from_numpy(np.array(stream["sampler_state"], dtype=np.uint8))}
    return {"model": ckpt["model"], "optimizer": ckpt["optimizer"], "updates": ckpt["updates"],
            "env_steps": ckpt["env_steps"], "rng": rng, "seed_base": 0,
            "episodes_done": np.full(2, stream["episodes_done"], dtype=np.int64),
            "at_episode_boundary": stream["at_boundary"], "config": ckpt["config"],
            "best_return": ckpt["best_return"], "recent_return": ckpt["recent_return"]}


def test_a_checkpoint_of_the_older_local_format_resumes_bit_identically(tmp_path):
    split, full = _split_and_full(tmp_path, [])
    latest = split / "checkpoints" / "latest.pt"
    save_checkpoint(latest, _as_old_local_checkpoint(load_checkpoint(latest)))
    assert "format" not in load_checkpoint(latest)
    cfg = load_config("configs/ia2c.toml", SHORT + ["train.steps=160"])
    train_local(cfg, split, resume=True)
    train_local(cfg, full)
    assert load_checkpoint(latest)["format"] == CHECKPOINT_FORMAT
    assert_same_params(full / "checkpoints" / "latest.pt", latest, atol=0.0)


def test_the_older_learner_service_format_converts_to_streams(tmp_path):
    sampler = np.arange(8, dtype=np.uint8)
    old = {"model": {}, "optimizer": {}, "updates": 3, "env_steps": 60, "mode": "sync",
           "rng": {"python": None}, "actors": {1: {"episodes_done": 3, "at_boundary": True,
                                                   "sampler_state": sampler}}}
    save_checkpoint(tmp_path / "old.pt", old)
    ckpt = read_checkpoint(tmp_path / "old.pt")
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["streams"][1]["episodes_done"] == 3
    np.testing.assert_array_equal(ckpt["streams"][1]["sampler_state"], sampler)


@pytest.mark.parametrize("content, reason", [
    (b"\x80\x02truncated", "not a readable checkpoint"),
    (None, "not a PowerNet checkpoint"),
    ("future", "format 99 is not known"),
])
def test_a_broken_or_foreign_checkpoint_is_refused_with_one_line(tmp_path, content, reason):
    path = tmp_path / "latest.pt"
    if content is None:
        save_checkpoint(path, {"weights": [1, 2]})
    elif content == "future":
        save_checkpoint(path, {"model": {}, "optimizer": {}, "updates": 0, "env_steps": 0, "format": 99})
    else:
        path.write_bytes(content)
    with pytest.raises(InputError, match=reason) as exc:
        read_checkpoint(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_resume_from_a_truncated_checkpoint_exits_2_naming_the_file(tmp_path):
    run = tmp_path / "run"
    args = ["train", "-c", "configs/ia2c.toml", "--steps", "40", "--out", str(run), "--progress", "off"]
    assert CliRunner().invoke(main, args).exit_code == 0
    latest = run / "checkpoints" / "latest.pt"
    latest.write_bytes(latest.read_bytes()[:100])
    result = CliRunner().invoke(main, [*args[:-2], "--resume", "--progress", "off"])
    assert result.exit_code == 2, result.output
    assert str(latest) in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_metrics_record_the_ppo_diagnostics_and_leave_them_empty_for_a2c(tmp_path):
    train_local(load_config("configs/ia2c.toml", ["train.steps=40", 'train.loss="ppo"']), tmp_path / "ppo")
    train_local(load_config("configs/ia2c.toml", ["train.steps=40"]), tmp_path / "a2c")
    for row in _rows(tmp_path / "ppo"):
        assert 0.0 <= float(row["clip_fraction"]) <= 1.0 and np.isfinite(float(row["approx_kl"]))
        assert row["rho_mean"] == row["rho_clipped"] == ""
    # the first PPO epoch starts at the acting policy: some ratio moved in the later epochs
    assert any(float(r["clip_fraction"]) > 0 or float(r["approx_kl"]) != 0 for r in _rows(tmp_path / "ppo"))
    for row in _rows(tmp_path / "a2c"):
        assert row["clip_fraction"] == row["approx_kl"] == row["rho_mean"] == ""


@pytest.mark.parametrize("unroll", ["kernel", "torch"])
def test_the_learner_builds_its_model_without_a_simulator(tmp_path, unroll):
    # the learner process needs the agent graph and sizes, which the system file gives; Numba only for the
    # compiled window unroll (train.unroll = kernel), never the simulator's kernels
    overrides = ['env.system="microgrid-20"', f'train.unroll="{unroll}"']
    code = ("import sys; from common.config import load_config; from launch.dist import build_learner; "
            f"s = build_learner(load_config('configs/powernet.toml', {overrides!r}), "
            f"{str(tmp_path)!r}, 'r', free_ports=True); s.close(); "
            "print(sorted(m for m in sys.modules if m.startswith(('simsvc', 'actor', 'numba', 'common.nets'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = set(eval(out.stdout.strip().splitlines()[-1]))
    assert "simsvc.systems" in loaded  # the system file was read ...
    assert not {"simsvc.simulator", "simsvc.model", "simsvc.env"} & loaded, loaded  # ... no simulator
    kernel = unroll == "kernel"
    assert ("common.nets.window_kernel" in loaded) is kernel and ("numba" in loaded) is kernel, loaded


def _imports(package: str) -> set[tuple[str, str]]:
    """(module file, imported top-level package of ours) for every import in `package`."""
    ours = {"actor", "learner", "simsvc", "common", "launch"}
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            found |= {(str(path.relative_to(ROOT)), n.split(".")[0]) for n in names if n.split(".")[0] in ours}
    return found


@pytest.mark.parametrize("package, allowed", [
    ("common", {"common"}), ("simsvc", {"simsvc", "common"}), ("actor", {"actor", "simsvc", "common"}),
    ("learner", {"learner", "common"}),
])
def test_packages_import_only_what_the_layering_allows(package, allowed):
    wrong = sorted((f, p) for f, p in _imports(package) if p not in allowed)
    assert not wrong, wrong


def _update_setup(*overrides: str):
    """A model, its optimiser (with state from one ordinary update) and a rollout of rewards 1e30."""
    from wire_helpers import forged_arrays

    from actor.envs import agent_spec
    from common.nets import build_model
    from common.rollout import Rollout
    from learner.service import rollout_spec
    from learner.update import make_optimizer, update

    cfg = load_config("configs/ia2c.toml", ["train.n_steps=5", *overrides])
    spec = agent_spec(cfg.env)
    torch.manual_seed(0)
    model = build_model(cfg.model, spec.adjacency, spec.obs_dim, spec.n_actions)
    optimiser = make_optimizer(model, cfg.train)
    arrays = forged_arrays(rollout_spec(cfg, model))
    update(model, optimiser, Rollout(**arrays, version=0), cfg.train)  # optimiser state exists now
    arrays["rewards"] = np.full_like(arrays["rewards"], 1e30)
    return cfg, model, optimiser, Rollout(**arrays, version=0)


def _state(model, optimiser) -> tuple[dict, dict]:
    import copy

    return ({k: v.clone() for k, v in model.state_dict().items()}, copy.deepcopy(optimiser.state_dict()))


def _assert_same_state(a, b) -> None:
    for key in a[0]:
        assert torch.equal(a[0][key], b[0][key]), key
    for key, state in a[1]["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b[1]["state"][key][name])), (key, name)


@pytest.mark.parametrize("loss", ["a2c", "ppo"])
def test_an_update_with_a_non_finite_loss_changes_nothing(loss):
    from learner.update import update

    cfg, model, optimiser, poisoned = _update_setup(f'train.loss="{loss}"')
    before = _state(model, optimiser)
    stats = update(model, optimiser, poisoned, cfg.train)
    assert stats["skipped"] == 1.0  # the loss of rewards of 1e30 is inf
    _assert_same_state(before, _state(model, optimiser))


def test_a_ppo_update_whose_later_epoch_fails_is_undone(monkeypatch):
    import learner.update as U

    cfg, model, optimiser, _ = _update_setup('train.loss="ppo"', "train.ppo_epochs=3")
    from wire_helpers import forged_arrays

    from common.rollout import Rollout
    from learner.service import rollout_spec

    ordinary = Rollout(**forged_arrays(rollout_spec(cfg, model)), version=0)
    calls = iter([True, False, True])
    monkeypatch.setattr(U, "_safe", lambda *a: next(calls))  # epoch 1 steps, epoch 2 fails
    before = _state(model, optimiser)
    assert U.update(model, optimiser, ordinary, cfg.train)["skipped"] == 1.0
    _assert_same_state(before, _state(model, optimiser))


def test_init_from_starts_a_fresh_run_from_another_runs_weights(tmp_path):
    from launch.local_trainer import prepare_run

    base = ["train.num_envs=2", "train.steps=40"]
    train_local(load_config("configs/ia2c.toml", base), tmp_path / "source")
    source = load_checkpoint(tmp_path / "source" / "checkpoints" / "latest.pt")
    for where in (tmp_path / "source", tmp_path / "source" / "checkpoints" / "latest.pt"):  # a run dir or a file
        cfg = load_config("configs/ia2c.toml", [*base, f'train.init_from="{where}"'])
        _, model = prepare_run(cfg, tmp_path / f"probe-{where.name}", resume=False)
        for key, value in source["model"].items():
            assert torch.equal(model.state_dict()[key], value), key
    # a fine-tuning run: fresh counters and optimiser, and it trains on from the source's weights
    tuned = load_config("configs/ia2c.toml", [*base, f'train.init_from="{tmp_path / "source"}"'])
    train_local(tuned, tmp_path / "tuned")
    train_local(load_config("configs/ia2c.toml", base), tmp_path / "fresh")
    after = load_checkpoint(tmp_path / "tuned" / "checkpoints" / "latest.pt")
    fresh = load_checkpoint(tmp_path / "fresh" / "checkpoints" / "latest.pt")
    assert (after["updates"], after["env_steps"]) == (source["updates"], 40)
    assert any(not torch.equal(after["model"][k], source["model"][k]) for k in source["model"])  # it learned
    assert any(not torch.equal(after["model"][k], fresh["model"][k]) for k in fresh["model"])  # not a fresh run
    # --resume continues the run's own checkpoint and no longer needs the source
    (tmp_path / "source" / "checkpoints" / "latest.pt").unlink()
    train_local(load_config("configs/ia2c.toml", [base[0], "train.steps=80",
                                                  f'train.init_from="{tmp_path / "source"}"']),
                tmp_path / "tuned", resume=True)
    assert load_checkpoint(tmp_path / "tuned" / "checkpoints" / "latest.pt")["env_steps"] == 80


@pytest.mark.parametrize("config, extra, message", [
    ("configs/powernet.toml", [], "holds a ia2c model; this run trains powernet"),
    ("configs/ia2c.toml", ['env.system="microgrid-20"'], "(trained on microgrid-6) does not fit this run's model "
                                                         "on microgrid-20"),
    ("configs/ia2c.toml", ["MISSING"], "train.init_from: no checkpoint at"),
])
def test_init_from_a_checkpoint_that_does_not_fit_is_one_line_and_exit_2(tmp_path, config, extra, message):
    train_local(load_config("configs/ia2c.toml", ["train.steps=20"]), tmp_path / "source")
    source = tmp_path / ("nowhere" if extra == ["MISSING"] else "source")
    sets = [s for s in extra if s != "MISSING"] + [f'train.init_from="{source}"']
    args = ["train", "-c", str(ROOT / config), "--steps", "20", "--out", str(tmp_path / "run"), "--progress", "off"]
    result = CliRunner().invoke(main, [*args, *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1


def test_fused_adam_trains_what_the_per_operation_kernel_trains(tmp_path):
    from learner.update import make_optimizer

    base = ["train.steps=160", "train.num_envs=2", 'train.loss="ppo"', 'train.optimizer="adam"', "train.lr=3e-4"]
    for fused in (True, False):
        cfg = load_config("configs/powernet.toml", [*base, f"train.fused_adam={str(fused).lower()}"])
        assert bool(make_optimizer(torch.nn.Linear(2, 2), cfg.train).defaults["fused"]) is fused
        train_local(cfg, tmp_path / f"fused-{fused}")
    # 4 updates of 4 PPO epochs: the kernels differ only in float rounding
    assert_same_params(tmp_path / "fused-True" / "checkpoints" / "latest.pt",
                       tmp_path / "fused-False" / "checkpoints" / "latest.pt", atol=1e-6)
