"""The committed study archives under results/ reproduce the committed reports.

This is what makes a result in results/ checkable on a clean clone: the archive (compact runs, baselines,
invocations) must be complete in git, and the report code must still read it to the same numbers.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from launch.report import write_report

RESULTS = Path(__file__).resolve().parents[1] / "results"
ARCHIVES = sorted(p for p in RESULTS.glob("*/study") if (p / "study.toml").is_file())


def _verdicts(report: Path) -> list[str]:
    """The report's ranking and efficiency verdict lines (they carry every comparison the text makes)."""
    return [line for line in report.read_text().splitlines()
            if line.startswith("**Ranking") or line.startswith("By area-mean")]


def test_there_is_an_archive_to_check() -> None:
    assert ARCHIVES, f"no study archive (study.toml) under {RESULTS}"


@pytest.mark.parametrize("archive", ARCHIVES, ids=[p.parent.name for p in ARCHIVES])
def test_archive_reproduces_committed_report(archive: Path, tmp_path: Path) -> None:
    committed = archive.parent
    runs = archive / "runs"
    assert runs.is_dir() and any(runs.iterdir()), f"{archive}: the archive has no runs in git (ignored by .gitignore?)"
    write_report(archive, tmp_path)
    for name in ("table.csv", "efficiency.csv"):
        assert (tmp_path / name).read_text() == (committed / name).read_text(), name
    assert _verdicts(tmp_path / "report.md") == _verdicts(committed / "report.md")
