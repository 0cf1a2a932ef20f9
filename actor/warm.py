"""Compile an actor's Numba kernels (the simulator's and the acting step's) into Numba's on-disk cache, in a
short-lived process of its own: ``python -m actor.warm -c CONFIG``.

The supervisor runs it once while the learner starts. On a fresh checkout the actors then load compiled
code instead of each compiling the same kernels at the same time (tens of seconds of CPU each on a
two-core machine), and no actor's peak memory includes the compiler's (about 100 MiB). With a warm cache
it only imports and loads, a second or two, in parallel with the learner's start.
"""

from __future__ import annotations

import argparse
import sys

from actor.worker import acting_setup
from common.config import Config, load_config


def warm(cfg: Config) -> None:
    """Build actor 0's envs and policy (zero weights) and collect one window: every kernel an actor runs."""
    collector, _, _ = acting_setup(cfg, 0)
    collector.collect(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m actor.warm", description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", required=True, help="the run's config")
    args = parser.parse_args(argv)
    warm(load_config(args.config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
