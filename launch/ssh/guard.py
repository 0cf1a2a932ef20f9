"""Run a command and stop it when our stdin closes or we get a signal; exit with its status.

ssh does not pass signals to the remote command, but when the local ssh client ends, the remote side sees
its stdin close: the launcher keeps each ssh's stdin open, and this guard turns end-of-input (or SIGTERM,
SIGHUP, SIGINT) into SIGTERM for the service, then SIGKILL after a grace period.
Usage: python -m launch.ssh.guard COMMAND [ARGS...]
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from types import FrameType

GRACE_S = 5.0


def main(argv: list[str]) -> int:
    """Run `argv` as a child, stop it on end of stdin or a signal, return its exit status."""
    if not argv:
        print("usage: python -m launch.ssh.guard COMMAND [ARGS...]", file=sys.stderr)
        return 2
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    stopping = threading.Event()

    def stop() -> None:
        if stopping.is_set():
            return
        stopping.set()
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(GRACE_S)
            except subprocess.TimeoutExpired:
                child.kill()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=stop, daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)

    def watch_stdin() -> None:
        try:  # the raw fd, not sys.stdin: a daemon thread blocked in a buffered read aborts shutdown
            while os.read(0, 4096):
                pass
        except (OSError, ValueError):
            pass
        stop()

    threading.Thread(target=watch_stdin, daemon=True).start()
    rc = child.wait()
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
