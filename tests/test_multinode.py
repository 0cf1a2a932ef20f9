"""Multi-node runs: CURVE authentication of actors, the bind policy, a multi-host run compared with a loopback
run (across Linux network namespaces joined by veth pairs where the machine allows it, else over this host's own
non-loopback address), the ssh launcher with a local ssh replacement, and the Slurm batch script's syntax and
dry run. Every child is killed in a finally, every namespace removed."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq
from checkpoint_helpers import assert_same_params
from proc_helpers import kill_all, wait_gone

from common import config as config_mod
from common.config import load_config
from common.security import generate_keys
from launch.dist import run_distributed

pytestmark = pytest.mark.timeout(240)
REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _cfg(actors: int, updates: int, *extra: str):
    return load_config("configs/powernet.toml",
                       ["train.n_steps=20", "train.seed=7", f"dist.actors={actors}", "dist.envs_per_actor=1",
                        f"train.steps={updates * 20 * actors}", *extra])


def _write_cfg(cfg, path: Path) -> Path:
    path.write_text(config_mod.dumps(cfg))
    return path


class Procs:
    """Services started by a test; `stop` kills whatever still runs (by recorded PID)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.procs = tmp, []

    def start(self, name: str, args: list[str], netns: str | None = None) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "launch", *args]
        if netns is not None:
            cmd = ["ip", "netns", "exec", netns, *cmd]  # ip execs the command: the pid is python's
        fh = (self.tmp / f"{name}.stderr").open("wb")
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=fh, env=ENV, cwd=REPO, start_new_session=True)
        self.procs.append(p)
        return p

    def stderr(self, name: str) -> str:
        return (self.tmp / f"{name}.stderr").read_text(errors="replace")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        left = wait_gone([p.pid for p in self.procs], 5.0)
        kill_all(left)
        for p in self.procs:
            p.wait()
            if p.stdout is not None:
                p.stdout.close()


@pytest.fixture
def procs(tmp_path: Path, no_orphans) -> Iterator[Procs]:
    ps = Procs(tmp_path)
    try:
        yield ps
    finally:
        ps.stop()


def _wait_endpoints(out: Path, learner: subprocess.Popen, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while not (out / "endpoints.json").exists():
        assert learner.poll() is None, f"learner exited with {learner.returncode}"
        assert time.monotonic() < deadline, "learner did not start"
        time.sleep(0.05)
    return json.loads((out / "endpoints.json").read_text())


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


# ------------------------------------------------------------------------------------------------- CURVE

def test_curve_admits_the_allowed_actor_and_refuses_wrong_or_missing_keys(tmp_path, procs):
    cfg_path = _write_cfg(_cfg(1, 4, "dist.learner_delay_s=0.3"), tmp_path / "cfg.toml")
    keys, rogue_keys, wrong = tmp_path / "keys", tmp_path / "rogue-keys", tmp_path / "wrong"
    generate_keys(keys, 1)
    generate_keys(rogue_keys, 1)  # a valid pair, but not in the learner's allow-list
    wrong.mkdir()
    shutil.copy(rogue_keys / "actor-0.key_secret", wrong)
    shutil.copy(keys / "learner.key", wrong)  # knows the server's public key: still refused
    out = tmp_path / "run"
    learner = procs.start("learner", ["learner", "-c", str(cfg_path), "--out", str(out), "--run-id", "r1",
                                      "--bind", "tcp://127.0.0.1:0", "--keys", str(keys)])
    ep = _wait_endpoints(out, learner)
    control = ep["control"]
    actor = ["actor", "--learner", control, "--id", "0", "-c", str(cfg_path), "--run-id", "r1", "--timeout", "6"]
    bad = procs.start("bad", actor + ["--keys", str(wrong), "--out", str(tmp_path / "bad")])
    nokey = procs.start("nokey", actor + ["--out", str(tmp_path / "nokey")])
    # a raw client without keys: its rollout never reaches the learner, its subscription gets no weights
    ctx = zmq.Context()
    push, sub = ctx.socket(zmq.PUSH), ctx.socket(zmq.SUB)
    try:
        push.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        push.connect(ep["rollout"])
        sub.connect(ep["weights"])
        try:  # never leaves: the CURVE handshake of a keyless client fails, so no connection is ready
            push.send_multipart([b"\x81\xa4type\xa7rollout"], zmq.NOBLOCK)
        except zmq.Again:
            pass
        time.sleep(1.5)
        good = procs.start("good", actor + ["--keys", str(keys), "--out", str(out)])
        assert not sub.poll(3000), "a subscriber without keys received weights"
    finally:
        push.close(0)
        sub.close(0)
        ctx.term()
    assert good.wait(90) == 0, procs.stderr("good")
    assert learner.wait(30) == 0, procs.stderr("learner")
    stats = json.loads((out / "learner_stats.json").read_text())
    assert stats["updates"] == 4 and stats["dropped"] == {}  # nothing but the good actor's rollouts arrived
    for name, p in (("bad", bad), ("nokey", nokey)):
        assert p.wait(30) == 3, f"{name}: {procs.stderr(name)}"
        assert "did not answer" in procs.stderr(name)
        log = (tmp_path / name / "logs" / "actor-0.log").read_text()
        assert "weights version" not in log, f"{name} got weights:\n{log}"
    assert "CURVE" in procs.stderr("bad")  # the hint about keys
    learner_log = (out / "logs" / "learner.log").read_text()
    assert "CURVE on: 1 actor keys allowed" in learner_log
    assert "refused a CURVE client" in learner_log


# ------------------------------------------------------------------------------------------------- bind policy

def test_non_loopback_bind_without_keys_exits_2_with_one_line(tmp_path):
    cfg_path = _write_cfg(_cfg(1, 1), tmp_path / "cfg.toml")
    for extra in ([], ["--set", "dist.host=0.0.0.0"]):
        bind = ["--bind", "tcp://0.0.0.0:0"] if not extra else []
        r = subprocess.run([sys.executable, "-m", "launch", "learner", "-c", str(cfg_path), "--out",
                            str(tmp_path / "run"), *bind, *extra], capture_output=True, text=True, timeout=60,
                           env=ENV, cwd=REPO)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "--insecure" in lines[0], r.stderr
        assert not (tmp_path / "run").exists()  # refused before anything was written
    r = subprocess.run([sys.executable, "-m", "launch", "learner", "-c", str(cfg_path), "--out", str(tmp_path / "x"),
                        "--bind", "tcp://10.0.0.1:99999"], capture_output=True, text=True, timeout=60, env=ENV,
                       cwd=REPO)
    assert r.returncode == 2 and r.stderr.startswith("error: --bind"), r.stderr
    r = subprocess.run([sys.executable, "-m", "launch", "keys", "--out", str(tmp_path / "k"), "--actors", "2"],
                       capture_output=True, text=True, timeout=60, env=ENV, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "k" / "actor-1.key_secret").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in (tmp_path / "k" / "allowed").iterdir()) == ["actor-0.key", "actor-1.key"]
    r = subprocess.run([sys.executable, "-m", "launch", "actor", "--learner", "tcp://127.0.0.1:5557", "--id", "1",
                        "-c", str(cfg_path), "--run-id", "r", "--keys", str(tmp_path / "k")],
                       capture_output=True, text=True, timeout=60, env=ENV, cwd=REPO)
    assert r.returncode == 2 and r.stderr.startswith("error: "), r.stderr  # --id 1 with dist.actors = 1


# ------------------------------------------------------------------------------------------------- namespaces

def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


def _netns_unavailable() -> str | None:
    if shutil.which("ip") is None:
        return "iproute2 `ip` is not installed"
    probe = f"pnprobe{secrets.token_hex(3)}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        return f"`ip netns add` failed (needs root / CAP_SYS_ADMIN): {r.stderr.strip()[:120]}"
    _ip("netns", "del", probe, check=False)
    return None


class Namespaces:
    """Network namespaces `hub` + spokes, each spoke joined to the hub by its own veth pair with a /30 from a
    random 10.x.y.0/24; nothing is added to the host's own network namespace."""

    def __init__(self, spokes: int) -> None:
        tag = secrets.token_hex(3)
        self.subnet = f"10.{secrets.randbelow(200) + 50}.{secrets.randbelow(250) + 1}"
        self.hub = f"pn-{tag}-hub"
        self.spokes = [f"pn-{tag}-s{i}" for i in range(spokes)]
        self.links = [(f"pn{tag}h{i}", f"pn{tag}s{i}") for i in range(spokes)]
        self.hub_addr = f"{self.subnet}.1"

    def create(self) -> None:
        for ns in [self.hub, *self.spokes]:
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        for i, (ns, (hub_if, spoke_if)) in enumerate(zip(self.spokes, self.links, strict=True)):
            _ip("link", "add", hub_if, "netns", self.hub, "type", "veth", "peer", "name", spoke_if, "netns", ns)
            base = 4 * i
            hub_ip, spoke_ip = f"{self.subnet}.{base + 1}", f"{self.subnet}.{base + 2}"
            _ip("-n", self.hub, "addr", "add", f"{hub_ip}/30", "dev", hub_if)
            _ip("-n", ns, "addr", "add", f"{spoke_ip}/30", "dev", spoke_if)
            _ip("-n", self.hub, "link", "set", hub_if, "up")
            _ip("-n", ns, "link", "set", spoke_if, "up")
            if i > 0:  # the learner's address lives on the first link; other spokes reach it over theirs
                _ip("-n", ns, "route", "add", f"{self.hub_addr}/32", "via", hub_ip)

    def remove(self) -> None:
        for ns in [self.hub, *self.spokes]:
            _ip("netns", "del", ns, check=False)  # deleting a namespace deletes its veth ends
        for hub_if, spoke_if in self.links:
            for name in (hub_if, spoke_if):
                if _ip("link", "show", name, check=False).returncode == 0:
                    _ip("link", "del", name, check=False)

    def left_over(self) -> list[str]:
        listed = _ip("netns", "list", check=False).stdout
        return [ns for ns in [self.hub, *self.spokes] if ns in listed]


def _host_address() -> str | None:
    """This host's non-loopback IPv4 address (the one its default route leaves by), or None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1; connect() on UDP only picks a route, it sends nothing
        except OSError:
            return None
        addr = s.getsockname()[0]
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr


@dataclass
class Hosts:
    """Where a learner and its actors run: `learner_ns`/`actor_ns` are network namespaces (None: the host's)."""

    how: str
    learner_addr: str
    port: int
    learner_ns: str | None
    actor_ns: list[str | None]


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    """Two actor hosts and a learner host: separate network namespaces joined by veth pairs where this machine
    lets us create them (root), else processes on this host talking over its own non-loopback address."""
    if _netns_unavailable() is None:
        ns = Namespaces(2)
        try:
            ns.create()
            assert ns.subnet + "." not in _ip("-o", "addr").stdout  # the address exists only inside them
            # a fixed port is safe: the namespace is ours alone
            yield Hosts("veth", ns.hub_addr, 5557, ns.hub, list(ns.spokes))
        finally:
            ns.remove()
        assert not ns.left_over(), f"namespaces left: {ns.left_over()}"
        return
    addr = _host_address()
    if addr is None:
        pytest.skip("neither network namespaces (needs root) nor a non-loopback IPv4 address on this machine")
    yield Hosts("host address", addr, _free_port_run(3, addr), None, [None, None])


def test_multi_host_run_over_a_non_loopback_address_matches_loopback(tmp_path, hosts, procs):
    updates, actors = 3, 2
    cfg = _cfg(actors, updates)
    cfg_path = _write_cfg(cfg, tmp_path / "cfg.toml")
    keys = tmp_path / "keys"
    generate_keys(keys, actors)
    out = tmp_path / "multi"
    bind = f"tcp://{hosts.learner_addr}:{hosts.port}"
    learner = procs.start("learner", ["learner", "-c", str(cfg_path), "--out", str(out), "--run-id", "mh",
                                      "--bind", bind, "--keys", str(keys)], netns=hosts.learner_ns)
    ep = _wait_endpoints(out, learner)
    assert ep["control"] == bind, hosts.how
    assert (_port(ep["rollout"]), _port(ep["weights"])) == (hosts.port + 1, hosts.port + 2)
    actor_ps = [procs.start(f"actor-{k}", ["actor", "--learner", bind, "--id", str(k), "-c", str(cfg_path),
                                           "--run-id", "mh", "--out", str(out), "--keys", str(keys),
                                           "--timeout", "60"], netns=hosts.actor_ns[k]) for k in range(actors)]
    for k, p in enumerate(actor_ps):
        assert p.wait(120) == 0, procs.stderr(f"actor-{k}")
    assert learner.wait(30) == 0, procs.stderr("learner")
    stats = json.loads((out / "learner_stats.json").read_text())
    assert stats["updates"] == updates and stats["dropped"] == {}
    run_distributed(cfg, tmp_path / "loopback")
    assert_same_params(tmp_path / "loopback" / "checkpoints" / "latest.pt", out / "checkpoints" / "latest.pt")


def test_insecure_bind_warns_and_trains(tmp_path, procs):
    """--insecure on a non-loopback address (0.0.0.0 inside a private namespace when we may create one)."""
    ns = None if _netns_unavailable() else Namespaces(0)
    cfg_path = _write_cfg(_cfg(1, 2), tmp_path / "cfg.toml")
    out = tmp_path / "run"
    try:
        if ns is not None:
            ns.create()
        where = ns.hub if ns is not None else None
        learner = procs.start("learner", ["learner", "-c", str(cfg_path), "--out", str(out), "--run-id", "in",
                                          "--bind", "tcp://0.0.0.0:0", "--insecure"], netns=where)
        ep = _wait_endpoints(out, learner)
        assert ep["control"].startswith("tcp://0.0.0.0:")
        actor = procs.start("actor", ["actor", "--learner", f"tcp://127.0.0.1:{_port(ep['control'])}", "--id",
                                      "0", "-c", str(cfg_path), "--run-id", "in", "--out", str(out)], netns=where)
        assert actor.wait(90) == 0, procs.stderr("actor")
        assert learner.wait(30) == 0, procs.stderr("learner")
    finally:
        procs.stop()
        if ns is not None:
            ns.remove()
    assert "warning: --insecure" in procs.stderr("learner")
    assert "without CURVE" in (out / "logs" / "learner.log").read_text()
    assert json.loads((out / "learner_stats.json").read_text())["updates"] == 2


# ------------------------------------------------------------------------------------------------- launchers

def _free_port_run(n: int = 3, host: str = "127.0.0.1") -> int:
    """A port P with P..P+n-1 all free on host right now."""
    for _ in range(200):
        base = 20000 + secrets.randbelow(30000)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind((host, p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port run")


def test_ssh_launcher_end_to_end_with_a_local_ssh(tmp_path, no_orphans):
    hosts = tmp_path / "hosts"
    hosts.write_text("# learner first\n127.0.0.1 actors=0\n127.0.0.1\nlocalhost actors=1\n")
    run = tmp_path / "runs" / "ssh-e2e"
    r = subprocess.run([sys.executable, "-m", "launch.ssh", "--hosts", str(hosts), "-c", "configs/powernet.toml",
                        "--out", str(run), "--actors-per-host", "1", "--port", str(_free_port_run()),
                        "--bind-host", "127.0.0.1", "--ssh-cmd", f"{REPO / 'launch/ssh/local-ssh'}",
                        "--set", "train.n_steps=20", "--set", "train.seed=7", "--set", "train.steps=120",
                        "--set", "dist.envs_per_actor=1"],
                       capture_output=True, text=True, timeout=200, env=ENV, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    stats = json.loads((run / "learner_stats.json").read_text())
    assert stats["updates"] == 3 and stats["dropped"] == {}
    logs = run / "logs"
    for name in ("learner", "actor-0", "actor-1"):
        assert (logs / f"{name}.log").stat().st_size > 0 and (logs / f"{name}.out").exists()
    assert (run / "keys" / "learner.key_secret").stat().st_mode & 0o777 == 0o600
    assert "CURVE on: 2 actor keys allowed" in (logs / "learner.log").read_text()


SBATCH = REPO / "launch" / "slurm" / "powernet.sbatch"


def test_slurm_script_syntax_and_dry_run(tmp_path):
    assert subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True, timeout=20).returncode == 0
    run = tmp_path / "run"
    env = {**ENV, "POWERNET_SLURM_DRYRUN": "1", "SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "node1,node2",
           "SLURM_JOB_NUM_NODES": "2", "POWERNET_RUN": str(run), "POWERNET_ACTORS_PER_NODE": "3",
           "POWERNET_CONFIG": "configs/powernet.toml", "PATH": "/usr/bin:/bin"}  # no scontrol needed
    r = subprocess.run(["bash", str(SBATCH)], capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    learner = [x for x in lines if "launch learner" in x]
    actors = [x for x in lines if re.search(r"launch\\? actor", x)]  # printf %q escapes the spaces
    assert len(learner) == 1 and len(actors) == 1, r.stdout
    assert re.search(r"srun .*--nodes=1 --ntasks=1 .*-w node1", learner[0])
    assert "--bind tcp://node1:5557" in learner[0] and f"--keys {run}/keys" in learner[0]
    assert "dist.actors=6" in learner[0] and "--resume" not in learner[0]
    assert re.search(r"srun .*--nodes=2 --ntasks=6 --ntasks-per-node=3", actors[0])
    assert "tcp://node1:5557" in actors[0] and "actor-%t" in actors[0] and "SLURM_PROCID" in actors[0]
    assert any("launch keys" in x and "--actors 6" in x for x in lines)
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "latest.pt").write_bytes(b"x")
    r = subprocess.run(["bash", str(SBATCH)], capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert r.returncode == 0 and "--resume" in [x for x in r.stdout.splitlines() if "launch learner" in x][0]
