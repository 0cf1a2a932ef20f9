"""Counting and logging events a peer can cause at any rate (dropped messages, refused handshakes) without
letting it fill the disk: the first few of each reason are logged in detail, the rest are summed and
reported in one line every few seconds. The counts themselves are exact."""

from __future__ import annotations

import logging
import time
from collections import Counter

FIRST_PER_REASON = 5   # detailed lines per reason before only summaries follow
SUMMARY_EVERY_S = 5.0  # seconds between summary lines while events keep coming


class RateLimitedLog:
    """Exact counts by reason (`counts`) and a log that grows by at most one line per `every_s` seconds once
    each reason has had its `first` detailed lines. `what` names the events in the lines ("dropped")."""

    def __init__(self, log: logging.Logger, what: str, first: int = FIRST_PER_REASON,
                 every_s: float = SUMMARY_EVERY_S) -> None:
        self.log, self.what, self.first, self.every_s = log, what, first, every_s
        self.counts: Counter[str] = Counter()
        self._unreported: Counter[str] = Counter()
        self._last_summary = time.monotonic()

    def add(self, reason: str, detail: str) -> None:
        """Count one event; log it in detail while its reason is still among the first few."""
        self.counts[reason] += 1
        n = self.counts[reason]
        if n <= self.first:
            more = f" (further '{reason}' are summed every {self.every_s:.0f} s)" if n == self.first else ""
            self.log.warning("%s (%s): %s%s", self.what, reason, detail[:200], more)
        else:
            self._unreported[reason] += 1

    def tick(self, now: float | None = None) -> None:
        """Write the summary line when one is due (call it from the service loop)."""
        now = time.monotonic() if now is None else now
        if self._unreported and now - self._last_summary >= self.every_s:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """Write the summary of whatever was not logged in detail yet."""
        now = time.monotonic() if now is None else now
        if self._unreported:
            parts = ", ".join(f"{reason} {n}" for reason, n in sorted(self._unreported.items()))
            self.log.warning("%s %d more in the last %.1f s: %s (totals: %s)", self.what,
                             sum(self._unreported.values()), now - self._last_summary, parts,
                             dict(sorted(self.counts.items())))
            self._unreported.clear()
        self._last_summary = now
