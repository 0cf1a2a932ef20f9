"""Per-stage wall-clock timers (MonoBeast style): accumulate seconds spent in named stages of a loop.

Actors time simulate / infer / send / wait / load, the learner receive / control / learn / publish / poll;
`launch.bench_system` turns the totals into the share of wall time spent on transport and (de)serialisation.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class StageTimer:
    """Seconds and call counts per stage, plus the wall time since construction (or `restart`)."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.calls: defaultdict[str, int] = defaultdict(int)
        self.start = time.perf_counter()

    def restart(self) -> None:
        """Forget every total and start the wall clock again."""
        self.seconds.clear()
        self.calls.clear()
        self.start = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Add the time spent inside the block to stage `name`."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t0
            self.calls[name] += 1

    def wrap(self, obj: Any, attr: str, name: str) -> None:
        """Time every call of the bound method `obj.attr` as stage `name` (patches the instance only)."""
        original: Callable[..., Any] = getattr(obj, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name):
                return original(*args, **kwargs)

        setattr(obj, attr, timed)

    def wall(self) -> float:
        """Seconds since construction or the last `restart`."""
        return time.perf_counter() - self.start

    def totals(self, prefix: str = "") -> dict[str, float]:
        """Stage totals in seconds (keys `prefix + stage`) and the wall time as `prefix + "wall"`."""
        out = {f"{prefix}{k}": round(v, 6) for k, v in sorted(self.seconds.items())}
        out[f"{prefix}wall"] = round(self.wall(), 6)
        return out


def from_meta(meta: dict[str, Any], prefix: str = "t_") -> dict[str, float]:
    """The timer totals an actor put into a rollout's meta (keys starting with `prefix`), prefix removed."""
    return {k[len(prefix):]: float(v) for k, v in meta.items()
            if k.startswith(prefix) and isinstance(v, (int, float)) and not isinstance(v, bool)}
