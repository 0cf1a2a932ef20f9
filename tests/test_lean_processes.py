"""Each process of a distributed run imports only what it runs: an actor acts without torch, and the
supervisor behind `powernet train --mode sync` loads neither torch, Numba nor pyzmq (fresh interpreters)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_an_actor_acts_without_importing_torch():
    # the actor command's imports and a real window of acting on microgrid-6
    result = _run("""
import json, sys
import numpy as np
import launch.dist_cmd
from actor.worker import acting_setup
from common.config import load_config
cfg = load_config("configs/powernet.toml", ["dist.actors=2", "dist.envs_per_actor=2"])
collector, timers, seed = acting_setup(cfg, 1)
rng = np.random.default_rng(0)
collector.policy.load({k: (0.1 * rng.standard_normal(v.shape)).astype(v.dtype) if v.dtype == np.float32 else v
                       for k, v in collector.policy.params.items()})
rollout, stats = collector.collect(0)
rollout.validate()
print(json.dumps({"torch": sorted(m for m in sys.modules if m.split(".")[0] == "torch"),
                  "steps": stats["env_steps"]}))
""")
    assert result == {"torch": [], "steps": 40}


def test_the_supervisor_imports_neither_torch_nor_numba(tmp_path):
    # `powernet train --mode sync` up to the supervisor's loop (run_distributed replaced by a probe)
    result = _run(f"""
import json, sys
import launch.dist, launch.progress, learner.checkpoint  # and what run_distributed imports when it starts
launch.dist.run_distributed = lambda *a, **k: {{"loaded": sorted(m for m in ("torch", "numba", "zmq", "scipy")
                                                               if m in sys.modules)}}
from launch.cli import main
main(["train", "-c", "configs/powernet.toml", "--mode", "sync", "--actors", "2", "--out", {str(tmp_path / "run")!r},
      "--progress", "off"], standalone_mode=False)
""")
    assert result == {"loaded": []}
