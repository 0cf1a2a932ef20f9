"""Launch a multi-node run over ssh: learner on the first host of a hosts file, K actors per host.

    python -m launch.ssh --hosts hosts.txt -c configs/powernet.toml --out runs/NAME [--actors-per-host K]
        [--port 5557] [--bind-host '*'] [--ssh-cmd 'ssh -o BatchMode=yes'] [--remote-repo DIR]
        [--remote-python PY] [--remote-run DIR] [--set KEY=VALUE ...] [--resume]

Hosts file: one host per line (``#`` comments); an optional ``actors=N`` overrides K for that line. The first
line runs the learner (and no actors unless it is the only line or says ``actors=N``). Every host needs this
repository at --remote-repo (default: this checkout's path) and a Python with it installed.

The launcher generates CURVE keys into RUN/keys (once; kept on resume), copies each host only the files it
needs (config, learner public key, its actors' secret keys; the learner host also its secret key and the
allow-list) into --remote-run (default: the same path as RUN), starts every service under
`launch.ssh.guard` (which stops it when the ssh connection closes), streams each service's output to
RUN/logs/NAME.out, and at the end pulls RUN/logs/NAME.log, metrics.csv and learner_stats.json back. It
stops everything when the learner ends, on error, and on Ctrl-C. ``--ssh-cmd launch/ssh/local-ssh`` runs the
"remote" commands on this machine (tests, dry runs).
"""

from __future__ import annotations

import argparse
import io
import logging
import secrets
import shlex
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import config as config_mod
from common.config import load_config
from common.errors import InputError
from common.logs import setup_logging
from common.security import LEARNER, actor_name, generate_keys

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Service:
    """One remote service: its name, host and the local ssh process that runs it."""

    name: str
    host: str
    proc: subprocess.Popen


def read_hosts(path: Path, per_host: int) -> list[tuple[str, int]]:
    """(host, actors) per line of the hosts file; the first host is the learner's."""
    hosts: list[tuple[str, int | None]] = []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        count: int | None = None
        for word in words[1:]:
            if not word.startswith("actors=") or not word[7:].isdigit():
                raise InputError(f"{path}:{n}: expected `HOST [actors=N]`, got {raw.strip()!r}")
            count = int(word[7:])
        hosts.append((words[0], count))
    if not hosts:
        raise InputError(f"{path}: no hosts")
    default_first = per_host if len(hosts) == 1 else 0
    return [(h, c if c is not None else (default_first if i == 0 else per_host)) for i, (h, c) in enumerate(hosts)]


def _tar(files: dict[str, Path]) -> bytes:
    """An in-memory tar of `files` (archive name -> local path), secrets kept at mode 0600."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for arcname, path in files.items():
            info = tar.gettarinfo(str(path), arcname)
            info.mode = 0o600 if arcname.endswith("_secret") else 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    return buf.getvalue()


class Launcher:
    """Starts, supervises and stops the services of one run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out).resolve()
        self.remote_run = args.remote_run or str(self.out)
        self.ssh = shlex.split(args.ssh_cmd)
        self.services: list[Service] = []
        self.out.joinpath("logs").mkdir(parents=True, exist_ok=True)
        self.log = setup_logging(self.out / "logs" / "launcher.log", "launcher", echo=True)

    def _ssh(self, host: str, command: str, **kw: object) -> subprocess.Popen:
        return subprocess.Popen([*self.ssh, host, command], **kw)  # type: ignore[call-overload]

    def copy(self, host: str, files: dict[str, Path]) -> None:
        """Put `files` under the remote run directory of `host` (one ssh, a tar on stdin)."""
        rr = shlex.quote(self.remote_run)
        proc = self._ssh(host, f"umask 077 && mkdir -p {rr} && cd {rr} && tar xf -", stdin=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, err = proc.communicate(_tar(files), timeout=120)
        if proc.returncode != 0:
            raise InputError(f"copying files to {host} failed ({proc.returncode}): {err.decode()[-300:].strip()}")

    def start(self, name: str, host: str, service_args: list[str]) -> Service:
        py = shlex.quote(self.args.remote_python)
        command = (f"cd {shlex.quote(self.args.remote_repo)} && OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 exec {py} "
                   f"-m launch.ssh.guard {py} -m launch {shlex.join(service_args)}")
        with (self.out / "logs" / f"{name}.out").open("ab") as fh:
            proc = self._ssh(host, command, stdin=subprocess.PIPE, stdout=fh, stderr=subprocess.STDOUT,
                             start_new_session=True)
        service = Service(name, host, proc)
        self.services.append(service)
        self.log.info("%s on %s (local ssh pid %d)", name, host, proc.pid)
        return service

    def stop(self, grace_s: float = 8.0) -> None:
        """Close every service's ssh stdin (its guard stops it), then terminate/kill the ssh processes."""
        for s in self.services:
            if s.proc.stdin is not None and not s.proc.stdin.closed:
                try:
                    s.proc.stdin.close()
                except OSError:
                    pass
        deadline = time.monotonic() + grace_s
        for s in self.services:
            try:
                s.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                s.proc.terminate()
                try:
                    s.proc.wait(3)
                except subprocess.TimeoutExpired:
                    s.proc.kill()
                    s.proc.wait()

    def pull(self, host: str, rel: str) -> None:
        """Fetch RUN/rel from `host` unless the local copy already has the same bytes (shared filesystem)."""
        path = shlex.quote(f"{self.remote_run}/{rel}")
        try:
            r = subprocess.run([*self.ssh, host, f"cat {path}"], capture_output=True, timeout=60)
        except subprocess.TimeoutExpired:
            self.log.warning("pulling %s from %s timed out", rel, host)
            return
        if r.returncode != 0:
            self.log.warning("could not pull %s from %s", rel, host)
            return
        local = self.out / rel
        if not (local.exists() and local.read_bytes() == r.stdout):
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(r.stdout)

    def run(self) -> int:
        a = self.args
        hosts = read_hosts(Path(a.hosts), a.actors_per_host)
        total = sum(n for _, n in hosts)
        if total < 1:
            raise InputError("no actors: set --actors-per-host or actors=N in the hosts file")
        cfg = load_config(a.config, [*a.set, f"dist.actors={total}"])
        cfg_file = self.out / "launch-config.toml"
        cfg_file.write_text(config_mod.dumps(cfg))
        keys = self.out / "keys"
        if not (keys / f"{LEARNER}.key").exists():
            generate_keys(keys, total)
        run_id = f"{self.out.name}-{secrets.token_hex(4)}"
        learner_host = hosts[0][0]
        address = f"tcp://{learner_host}:{a.port}"
        # who runs which actor ids
        plan: list[tuple[str, list[int]]] = []
        k = 0
        for host, n in hosts:
            plan.append((host, list(range(k, k + n))))
            k += n
        # copy each host what it needs (hosts listed twice get the union)
        needs: dict[str, dict[str, Path]] = {}
        for i, (host, ids) in enumerate(plan):
            files = needs.setdefault(host, {"launch-config.toml": cfg_file,
                                            f"keys/{LEARNER}.key": keys / f"{LEARNER}.key"})
            if i == 0:
                files[f"keys/{LEARNER}.key_secret"] = keys / f"{LEARNER}.key_secret"
                files.update({f"keys/allowed/{p.name}": p for p in sorted((keys / "allowed").glob("*.key"))})
            for j in ids:
                files[f"keys/{actor_name(j)}.key_secret"] = keys / f"{actor_name(j)}.key_secret"
        for host, files in needs.items():
            self.copy(host, files)
        rr = self.remote_run
        self.log.info("run %s: learner on %s (%s), %d actors on %d hosts", run_id, learner_host, address, total,
                      len(hosts))
        try:
            learner = self.start("learner", learner_host,
                                 ["learner", "-c", f"{rr}/launch-config.toml", "--out", rr, "--run-id", run_id,
                                  "--bind", f"tcp://{a.bind_host}:{a.port}", "--keys", f"{rr}/keys"]
                                 + ["--resume"] * a.resume)
            for host, ids in plan:
                for j in ids:
                    self.start(actor_name(j), host,
                               ["actor", "--learner", address, "--id", str(j), "-c", f"{rr}/launch-config.toml",
                                "--run-id", run_id, "--out", rr, "--keys", f"{rr}/keys", "--timeout",
                                str(a.actor_timeout)])
            reported: set[str] = set()
            while learner.proc.poll() is None:
                for s in self.services[1:]:
                    rc = s.proc.poll()
                    if rc not in (None, 0) and s.name not in reported:
                        reported.add(s.name)
                        self.log.warning("%s on %s exited with %s; see logs/%s.out", s.name, s.host, rc, s.name)
                time.sleep(0.2)
            rc = learner.proc.returncode
            (self.log.info if rc == 0 else self.log.error)("learner exited with %s", rc)
            deadline = time.monotonic() + 10  # actors stop on the learner's stop message
            while time.monotonic() < deadline and any(s.proc.poll() is None for s in self.services):
                time.sleep(0.1)
            return rc
        except KeyboardInterrupt:
            self.log.warning("interrupted: stopping every service")
            return 130
        finally:
            self.stop()
            for s in self.services:
                self.log.info("%s on %s ended with %s", s.name, s.host, s.proc.returncode)
                self.pull(s.host, f"logs/{s.name}.log")
            for rel in ("metrics.csv", "learner_stats.json"):
                self.pull(learner_host, rel)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run; bad input is one `error:` line and status 2."""
    p = argparse.ArgumentParser(prog="python -m launch.ssh", description=__doc__.split("\n")[0])
    p.add_argument("--hosts", required=True, help="hosts file: HOST [actors=N] per line, learner first")
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--out", required=True, help="local run directory, e.g. runs/NAME")
    p.add_argument("--actors-per-host", type=int, default=1)
    p.add_argument("--port", type=int, default=5557, help="learner control port (rollouts +1, weights +2)")
    p.add_argument("--bind-host", default="*", help="interface the learner binds on its host (default: all)")
    p.add_argument("--ssh-cmd", default="ssh -o BatchMode=yes", help="ssh command (launch/ssh/local-ssh: local)")
    p.add_argument("--remote-repo", default=str(REPO), help="repository path on the hosts")
    p.add_argument("--remote-python", default=sys.executable, help="python on the hosts")
    p.add_argument("--remote-run", help="run directory on the hosts (default: the same path as --out)")
    p.add_argument("--actor-timeout", type=float, default=60.0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--resume", action="store_true", help="continue from the learner host's checkpoint")
    args = p.parse_args(argv)
    try:
        return Launcher(args).run()
    except (InputError, FileNotFoundError) as exc:
        print(f"error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    logging.captureWarnings(True)
    sys.exit(main())
