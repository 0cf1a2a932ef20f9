"""Training progress on the console, fed with metrics.csv rows (one per update).

On a terminal: a tqdm bar over env steps with steps/s, recent return and policy lag. Otherwise (a pipe, a
log file, CI): one plain line every `every` updates and one at the end. The local trainer calls
`Progress.update` with each row it writes; the sync supervisor tails the learner's metrics.csv with
`MetricsTail` and feeds the rows it finds.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

RECENT_EPISODES = 100  # "recent return": mean return of the last this many finished episodes
RATE_WINDOW = 20       # steps/s over the last this many rows


def _float(value: Any) -> float | None:
    """A metrics cell as a float, or None when empty or unparsable."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _columns(stream: TextIO) -> int:
    """The terminal width of `stream`, 0 when unknown."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return 0


class Progress:
    """A progress display for `total_steps` env steps; `style` is auto (bar on a tty), bar, plain or off."""

    def __init__(self, total_steps: int, style: str = "auto", every: int = 50, stream: TextIO | None = None,
                 desc: str = "train") -> None:
        self.stream = stream if stream is not None else sys.stderr
        if style == "auto":
            isatty = getattr(self.stream, "isatty", None)
            style = "bar" if callable(isatty) and isatty() else "plain"
        if style not in ("bar", "plain", "off"):
            raise ValueError(f"progress style {style!r}: expected auto, bar, plain or off")
        self.style, self.total, self.every = style, int(total_steps), max(1, int(every))
        self._returns: deque[tuple[float, int]] = deque()  # (mean return, episodes) per row, newest last
        self._episodes = 0
        self._points: deque[tuple[float, int]] = deque(maxlen=RATE_WINDOW + 1)  # (wall_s, env_steps)
        self._last: Mapping[str, Any] | None = None
        self._printed_update = 0
        self._t0 = time.perf_counter()
        self._bar: Any = None
        if style == "bar":
            from tqdm import tqdm

            width = _columns(self.stream)  # 0 on a pseudo-terminal without a size (e.g. `script`)
            self._bar = tqdm(total=self.total, desc=desc, unit="step", unit_scale=True, file=self.stream,
                             dynamic_ncols=width > 0, ncols=None if width > 0 else 100,
                             nrows=None if width > 0 else 24, smoothing=0.1,
                             bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]{postfix}")

    # ------------------------------------------------------------------------------------------ statistics

    def recent_return(self) -> float | None:
        """Mean episode return over (about) the last RECENT_EPISODES episodes, None before the first one."""
        if not self._episodes:
            return None
        total = sum(r * n for r, n in self._returns)
        return total / self._episodes

    def steps_per_s(self) -> float | None:
        """Env steps per second over the last RATE_WINDOW rows (None until two rows with distinct times)."""
        if len(self._points) < 2:
            return None
        (w0, s0), (w1, s1) = self._points[0], self._points[-1]
        return (s1 - s0) / (w1 - w0) if w1 > w0 else None

    def _add(self, row: Mapping[str, Any]) -> None:
        ret, eps = _float(row.get("episode_return")), _float(row.get("episodes"))
        if ret is not None and eps:
            self._returns.append((ret, int(eps)))
            self._episodes += int(eps)
            while len(self._returns) > 1 and self._episodes - self._returns[0][1] >= RECENT_EPISODES:
                self._episodes -= self._returns.popleft()[1]
        wall, steps = _float(row.get("wall_s")), _float(row.get("env_steps"))
        if wall is not None and steps is not None:
            self._points.append((wall, int(steps)))
        self._last = row

    def summary(self) -> str:
        """One line: update, env steps (share of the total), steps/s, recent return, policy lag."""
        row = self._last or {}
        steps = int(_float(row.get("env_steps")) or 0)
        rate, ret, lag = self.steps_per_s(), self.recent_return(), _float(row.get("policy_lag"))
        share = 100.0 * steps / self.total if self.total else 0.0
        return (f"update {int(_float(row.get('update')) or 0)}  env steps {steps}/{self.total} ({share:.0f}%)  "
                f"{'-' if rate is None else f'{rate:.0f}'} steps/s  "
                f"recent return {'-' if ret is None else f'{ret:.3f}'}  "
                f"policy lag {'-' if lag is None else f'{lag:g}'}")

    # ------------------------------------------------------------------------------------------ display

    def update(self, row: Mapping[str, Any]) -> None:
        """Take one metrics row (a dict as written to metrics.csv, numbers or strings)."""
        self._add(row)
        if self.style == "bar":
            steps = int(_float(row.get("env_steps")) or 0)
            self._bar.update(max(0, min(steps, self.total) - self._bar.n))
            rate, ret, lag = self.steps_per_s(), self.recent_return(), _float(row.get("policy_lag"))
            post = {"steps/s": "-" if rate is None else f"{rate:.0f}",
                    "return": "-" if ret is None else f"{ret:.3f}",
                    "lag": "-" if lag is None else f"{lag:g}"}
            self._bar.set_postfix(post, refresh=False)
        elif self.style == "plain":
            upd = int(_float(row.get("update")) or 0)
            if upd // self.every > self._printed_update // self.every:
                self._print()

    def _print(self) -> None:
        self._printed_update = int(_float((self._last or {}).get("update")) or 0)
        print(f"progress: {self.summary()}", file=self.stream, flush=True)

    def close(self) -> None:
        """Finish the bar, or print the final plain line if the last row was not printed yet."""
        if self._bar is not None:
            self._bar.refresh()
            self._bar.close()
            self._bar = None
        elif self.style == "plain" and self._last is not None and \
                int(_float(self._last.get("update")) or 0) != self._printed_update:
            self._print()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MetricsTail:
    """Reads the rows appended to a metrics.csv since the last call (complete lines only)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._offset = 0
        self._header: list[str] | None = None

    def read(self) -> list[dict[str, str]]:
        """New complete rows as dicts (an empty list when the file is missing or has nothing new)."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except OSError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        lines = data[:end + 1].decode("utf-8", errors="replace").splitlines()
        if self._header is None and lines:
            self._header = next(csv.reader([lines.pop(0)]))
        if not lines:
            return []
        return list(csv.DictReader(io.StringIO("\n".join(lines)), fieldnames=self._header))
