"""Bind policy and CURVE keys of a distributed run, used by both the learner and the actors.

Policy: a learner binds to a loopback address unless told otherwise; binding to any other interface needs
CURVE keys (``powernet keys``) or an explicit ``--insecure``. With keys, all three learner sockets (PULL,
PUB, ROUTER) are CURVE servers and a ZAP authenticator admits only the actor public keys found in
``KEYS/allowed/``, so a client without an allowed key can neither send rollouts nor receive weights. The
allow-list names each key's actor (``allowed/actor-K.key``): the learner takes an actor's id from the key
that authenticated a connection (`ServerSecurity.actor_of`), never from the message.

Key directory written by `generate_keys`::

    KEYS/learner.key, learner.key_secret        the learner's pair (public file is copied to every actor)
    KEYS/actor-K.key, actor-K.key_secret        one pair per actor id K
    KEYS/allowed/actor-K.key                    public keys the learner accepts (delete one to revoke)

Secret files are mode 0600, the directory 0700.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from common.errors import InputError

LEARNER = "learner"
ALLOWED = "allowed"
_TCP = re.compile(r"^tcp://(\[[^\]]+\]|[^:/\[\]]+):(\d+)$")


def actor_name(actor_id: int) -> str:
    """File stem of actor `actor_id`'s key pair."""
    return f"actor-{actor_id}"


def parse_tcp(address: str, what: str = "--bind") -> tuple[str, int]:
    """Split ``tcp://HOST:PORT`` into (host, port); a bad address is an InputError."""
    match = _TCP.match(address.strip())
    if not match or not 0 <= int(match.group(2)) <= 65535:
        raise InputError(f"{what} {address!r}: expected tcp://HOST:PORT with PORT in 0..65535")
    return match.group(1).strip("[]"), int(match.group(2))


def check_host(host: str) -> None:
    """Refuse a bind host that names no address (an unresolvable name) with one line that says so, before the
    bind policy talks about keys for it."""
    if host in ("*", ""):
        return
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(f"dist.host {host!r} does not resolve to an address ({exc}); give an address or name "
                         f"of this machine, e.g. 127.0.0.1") from None


def describe_host(host: str) -> str:
    """How the bind policy names a host in its messages: the wildcard addresses mean every interface."""
    if host in ("*", "0.0.0.0", "::", ""):
        return f"{host or '*'!r} (every network interface of this machine, not only loopback)"
    return f"{host!r} (not loopback)"


def is_loopback(host: str) -> bool:
    """True when every address `host` names is a loopback one (``*`` and unresolvable names are not)."""
    if host in ("*", ""):
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


def peer_endpoint(learner: str, advertised: str) -> str:
    """The endpoint an actor should connect to: the learner's host from its own ``--learner`` address with
    the port the learner advertised (which may name ``0.0.0.0`` or an interface the actor can't reach)."""
    if not (learner.startswith("tcp://") and advertised.startswith("tcp://")):
        return advertised
    host = learner[len("tcp://"):].rsplit(":", 1)[0]
    port = advertised.rsplit(":", 1)[1]
    return f"tcp://{host}:{port}"


def generate_keys(out: str | Path, actors: int) -> dict[str, Path]:
    """Write the learner's key pair, `actors` actor key pairs and the allow-list into `out`; refuse to
    overwrite existing keys. Returns name -> public key file."""
    import zmq.auth

    out = Path(out)
    if actors < 1:
        raise InputError(f"--actors {actors}: expected at least 1")
    if (out / f"{LEARNER}.key").exists():
        raise InputError(f"{out} already holds keys; remove it or choose another --out")
    allowed = out / ALLOWED
    old = os.umask(0o077)  # secrets are never readable by others, not even briefly
    try:
        allowed.mkdir(parents=True, exist_ok=True)
        made: dict[str, Path] = {}
        for name in [LEARNER] + [actor_name(k) for k in range(actors)]:
            public, secret = zmq.auth.create_certificates(out, name)
            os.chmod(secret, 0o600)
            os.chmod(public, 0o644)
            made[name] = Path(public)
            if name != LEARNER:
                shutil.copyfile(public, allowed / Path(public).name)
                os.chmod(allowed / Path(public).name, 0o644)
    finally:
        os.umask(old)
    os.chmod(out, 0o700)
    return made


def _load(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    import zmq.auth

    if not path.is_file():
        raise InputError(f"--keys: missing {path} (create keys with `powernet keys --out DIR`)")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (ValueError, OSError) as exc:
        raise InputError(f"--keys: cannot read {path}: {exc}") from None
    if secret and not secret_key:
        raise InputError(f"--keys: {path} holds no secret key")
    return public, secret_key


class _AllowList:
    """ZAP credentials provider: accepts exactly the allowed actor public keys, logs each refused key once
    (naming its actor when the key directory still holds its public file, i.e. a revoked actor). The set of
    logged keys is bounded, so a client cycling through random keys cannot grow it."""

    MAX_LOGGED = 256

    def __init__(self, keys: dict[bytes, str], known: dict[bytes, str], log: logging.Logger) -> None:
        self.keys, self.known, self.log, self.refused = keys, known, log, 0
        self._seen: set[bytes] = set()

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys:
            return True
        self.refused += 1
        if key not in self._seen and len(self._seen) < self.MAX_LOGGED:
            self._seen.add(key)
            who = f"{self.known[key]}'s key (not in allowed/: revoked)" if key in self.known else "a key"
            self.log.warning("refused a CURVE client with %s: public key %s is not in the allow-list", who,
                             key.decode(errors="replace"))
        return False


@dataclass
class ServerSecurity:
    """The learner's side: CURVE server options for its sockets plus the authenticator thread (or nothing,
    for a loopback or explicitly insecure bind)."""

    public: bytes | None = None
    secret: bytes | None = None
    allowed: dict[bytes, str] = field(default_factory=dict)  # z85 public key -> the actor it was issued to
    known: dict[bytes, str] = field(default_factory=dict)    # every actor public key file in the key directory
    warning: str | None = None  # set for an explicitly insecure non-loopback bind; the learner logs it
    _auth: Any = None
    _provider: _AllowList | None = None

    @property
    def curve(self) -> bool:
        return self.secret is not None

    def start(self, ctx: zmq.Context, log: logging.Logger) -> None:
        """Start the ZAP authenticator on `ctx` (before any socket binds)."""
        if not self.curve or self._auth is not None:
            return
        from zmq.auth.thread import ThreadAuthenticator

        self._provider = _AllowList(self.allowed, self.known, log)
        self._auth = ThreadAuthenticator(ctx, log=logging.getLogger("powernet.zap"))
        self._auth.start()
        self._auth.configure_curve_callback(domain="*", credentials_provider=self._provider)
        log.info("CURVE on: %d actor keys allowed", len(self.allowed))

    @property
    def refused(self) -> int:
        """CURVE handshakes refused so far."""
        return self._provider.refused if self._provider is not None else 0

    def actor_of(self, user_id: str | None) -> str | None:
        """The actor name (``actor-K``) the key that authenticated a connection was issued to: ZeroMQ puts
        the ZAP handler's user id, the key in z85, on every message that connection delivers."""
        return None if user_id is None else self.allowed.get(user_id.encode("ascii", "replace"))

    def apply(self, sock: zmq.Socket) -> None:
        """Make `sock` a CURVE server (call before bind)."""
        if self.curve:
            sock.curve_secretkey = self.secret
            sock.curve_publickey = self.public
            sock.curve_server = True

    def stop(self) -> None:
        """Stop the authenticator thread (before the context terminates)."""
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


def server_security(host: str, keys: str | Path | None, insecure: bool) -> ServerSecurity:
    """The learner's policy for binding to `host`: CURVE with `keys`; plain on loopback; plain elsewhere
    only with `insecure` (with a `warning` to log); otherwise an InputError naming both ways out."""
    if keys is not None and insecure:
        raise InputError("--keys and --insecure exclude each other")
    if keys is not None:
        keys = Path(keys)
        public, secret = _load(keys / f"{LEARNER}.key_secret", secret=True)
        allowed_dir = keys / ALLOWED
        allowed: dict[bytes, str] = {}
        for path in sorted(allowed_dir.glob("*.key")) if allowed_dir.is_dir() else []:
            allowed[_load(path, secret=False)[0]] = path.stem
        if not allowed:
            raise InputError(f"--keys: no actor public keys in {allowed_dir}")
        known = {}
        for path in sorted(keys.glob("*.key")):
            if path.stem != LEARNER:
                try:
                    known[_load(path, secret=False)[0]] = path.stem
                except InputError:
                    continue  # only used to name a refused key in the log
        return ServerSecurity(public, secret, allowed, known)
    check_host(host)
    if not is_loopback(host):
        if not insecure:
            raise InputError(f"binding to {describe_host(host)} needs CURVE keys (--keys DIR, made by "
                             f"`powernet keys --out DIR`) or an explicit --insecure")
        return ServerSecurity(warning=f"--insecure: binding to {host} without CURVE; anyone who can reach "
                                      f"this address can send rollouts and read weights")
    return ServerSecurity()


@dataclass
class ClientSecurity:
    """An actor's side: its own key pair and the learner's public key (or nothing, for a plain link)."""

    public: bytes | None = None
    secret: bytes | None = None
    server: bytes | None = None

    def apply(self, sock: zmq.Socket) -> None:
        """Make `sock` a CURVE client of the learner (call before connect)."""
        if self.secret is not None:
            sock.curve_secretkey = self.secret
            sock.curve_publickey = self.public
            sock.curve_serverkey = self.server


def client_security(keys: str | Path | None, actor_id: int) -> ClientSecurity:
    """Actor `actor_id`'s CURVE credentials from `keys` (KEYS/actor-K.key_secret and KEYS/learner.key)."""
    if keys is None:
        return ClientSecurity()
    keys = Path(keys)
    public, secret = _load(keys / f"{actor_name(actor_id)}.key_secret", secret=True)
    server, _ = _load(keys / f"{LEARNER}.key", secret=False)
    return ClientSecurity(public, secret, server)
