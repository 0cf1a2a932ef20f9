"""Where a result came from: the git commit, the package versions and the machine that produced it.

Training runs write `provenance_header()` above their resolved config.toml; studies record `git_commit()`,
`has_uncommitted_changes()` and `machine()` per invocation; reports read the header back with
`read_provenance_header`. One module, so that the header a run writes and the report that parses it agree.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
VERSIONED_PACKAGES = ("torch", "numpy", "numba")  # the packages whose versions change training numbers


def _git(*args: str) -> str:
    """stdout of a git command in the repository ("" when git is missing, fails or hangs)."""
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                              cwd=REPO_ROOT).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_commit() -> str:
    """HEAD commit of the repository ("unknown" outside a git checkout)."""
    return _git("rev-parse", "HEAD") or "unknown"


def has_uncommitted_changes() -> bool:
    """Whether tracked files outside results/ have uncommitted changes; results/ holds reports, which change
    by being written, not the code that produced them."""
    return bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"))


def versions() -> str:
    """'python 3.11.9, torch 2.3.1, numpy 1.26.4, numba 0.60.0' (packages that are not installed left out)."""
    found = []
    for pkg in VERSIONED_PACKAGES:
        try:
            found.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    return f"python {platform.python_version()}, " + ", ".join(found)


def provenance_header(tool: str = "powernet train") -> str:
    """The comment lines above a resolved config.toml: which tool wrote it, the git commit, the versions."""
    return f"resolved by {tool}\ngit commit {git_commit()}\n{versions()}"


def read_provenance_header(text: str) -> tuple[str, str]:
    """(git commit, versions line) from a config.toml written under `provenance_header()` ("" when absent)."""
    commit = re.search(r"^# git commit (\S+)", text, re.M)
    found = re.search(r"^# (python .*)$", text, re.M)
    return commit.group(1) if commit else "", found.group(1) if found else ""


def machine() -> dict[str, Any]:
    """Host name, CPU model, core count, OS and Python of this machine."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count() or 1, "os": platform.platform(),
            "python": platform.python_version()}
