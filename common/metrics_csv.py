"""metrics.csv of a run: one row per update, shared by the reference trainer and the learner service."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import IO


def open_metrics(path: Path, fields: Sequence[str], resume_update: int | None = None) -> tuple[IO[str], csv.DictWriter]:
    """Open metrics.csv for writing rows; returns (file, writer).

    A fresh run starts the file with its header. A resumed run (resume_update = the checkpoint's update
    count) keeps the rows up to that update and drops any logged after it, which the interrupted attempt
    wrote past its last checkpoint and the resumed run is about to write again.
    """
    kept: list[dict[str, str]] = []
    if resume_update is not None and path.exists():
        with path.open(newline="") as fh:
            kept = [row for row in csv.DictReader(fh) if _update_of(row) <= resume_update]
    fh = path.open("w", newline="")
    writer = csv.DictWriter(fh, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(kept)
    fh.flush()
    return fh, writer


def _update_of(row: dict[str, str]) -> int:
    try:
        return int(float(row.get("update") or 0))
    except ValueError:
        return 0
