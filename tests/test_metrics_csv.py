"""metrics.csv on resume: rows past the checkpoint are dropped, earlier ones kept, the header written once."""

from __future__ import annotations

import csv
from pathlib import Path

from common.metrics_csv import open_metrics

FIELDS = ("update", "env_steps", "reward_mean")


def write_rows(path: Path, updates: range, resume_update: int | None = None) -> None:
    fh, writer = open_metrics(path, FIELDS, resume_update)
    with fh:
        for u in updates:
            writer.writerow({"update": u, "env_steps": 20 * u, "reward_mean": 0.1 * u})


def read_updates(path: Path) -> list[int]:
    with path.open(newline="") as fh:
        return [int(row["update"]) for row in csv.DictReader(fh)]


def test_resume_drops_rows_logged_after_the_checkpoint_and_continues(tmp_path: Path):
    path = tmp_path / "metrics.csv"
    write_rows(path, range(1, 6))  # the interrupted attempt logged updates 1..5, its checkpoint is at 3
    write_rows(path, range(4, 8), resume_update=3)
    assert read_updates(path) == [1, 2, 3, 4, 5, 6, 7]
    assert path.read_text().count("update,env_steps") == 1


def test_fresh_run_overwrites_an_old_file(tmp_path: Path):
    path = tmp_path / "metrics.csv"
    write_rows(path, range(1, 4))
    write_rows(path, range(1, 3))
    assert read_updates(path) == [1, 2]
