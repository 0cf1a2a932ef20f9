"""`powernet` imports what a command uses: the listing pulls in no heavy library, and nothing but the
reference solvers of `powernet bench sim` needs scipy (a test extra, not an install requirement)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numba", "scipy", "matplotlib")
# Every command, by its words on the command line.
COMMANDS = (["sim"], ["train"], ["evaluate"], ["learner"], ["actor"], ["keys"], ["plot"], ["study"], ["report"],
            ["traces"], ["bench"], ["bench", "act"], ["bench", "actors"], ["bench", "sim"], ["bench", "learner"],
            ["bench", "system"])
BLOCK_SCIPY = "import sys; sys.modules['scipy'] = None\n"  # `import scipy` (and scipy.*) now raises ImportError


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def run_powernet(*args: str, block_scipy: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`powernet ARGS` in a fresh interpreter, optionally one where scipy cannot be imported."""
    code = (BLOCK_SCIPY if block_scipy else "") + "from launch.cli import main\nmain(prog_name='powernet')\n"
    return run_python(code, *args, timeout=timeout)


LISTING_SCRIPT = """
import json, sys
import click
from launch.cli import main

after_import = sorted(m for m in {heavy} if m in sys.modules)

def listing(args):
    try:
        main(args, prog_name="powernet")
    except SystemExit as exc:
        assert exc.code == 0, exc.code

listing(["--help"])
listing(["bench", "--help"])
after_help = sorted(m for m in {heavy} if m in sys.modules)
print("\\n@@")
ctx = click.Context(main)
for name in main.list_commands(ctx):  # import every command: the listing must not change
    group = main.get_command(ctx, name)
    if isinstance(group, click.Group):
        for sub in group.list_commands(ctx):
            group.get_command(ctx, sub)
listing(["--help"])
listing(["bench", "--help"])
print("\\n@@")
print(json.dumps({{"after_import": after_import, "after_help": after_help}}))
"""


def test_import_and_help_load_no_heavy_library_and_list_what_the_commands_say():
    proc = run_python(LISTING_SCRIPT.format(heavy=HEAVY))
    assert proc.returncode == 0, proc.stderr
    lazy_listing, eager_listing, loaded = proc.stdout.split("\n@@\n")
    assert json.loads(loaded) == {"after_import": [], "after_help": []}
    assert lazy_listing == eager_listing
    for line in ("  sim ", "  train ", "  bench ", "  report ", "  study ", "  learner ", "  system "):
        assert line in lazy_listing
    assert "Run one episode (warm-up included)" in lazy_listing


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_help_works_without_scipy(command: list[str]):
    proc = run_powernet(*command, "--help", block_scipy=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"Usage: powernet {' '.join(command)} ")


def test_sim_runs_without_scipy(tmp_path: Path):
    out = tmp_path / "run"
    proc = run_powernet("sim", "--system", "bidram-4", "--controller", "droop", "--duration", "0.1", "--out",
                        str(out), block_scipy=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.iterdir()} == {"trace.npz", "trace.png", "summary.json"}


def test_bench_sim_without_scipy_is_one_line_and_exit_status_2(tmp_path: Path):
    out = tmp_path / "bench.json"
    proc = run_powernet("bench", "sim", "--out", str(out), "--system", "microgrid-6", block_scipy=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: powernet bench sim needs scipy") and "'.[test]'" in lines[0]
    assert not out.exists()
