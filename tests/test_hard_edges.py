"""The hard edges of a run, each met with one `error:` line and exit status 2, or with a safe recovery: a
corrupt latest checkpoint on --resume (falls back to the one before it), a port in use, an --out that cannot
be a directory, a wildcard or unresolvable dist.host, metrics.csv deleted during a run (re-created with its
header), and updates that keep being skipped (the run stops). Through the real command line (click's
runner, in-process) with small runs."""

from __future__ import annotations

import csv
import socket
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from common.config import load_config
from launch.cli import main
from launch.local_trainer import train_local
from learner.checkpoint import load_checkpoint

pytestmark = pytest.mark.timeout(120)
CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "powernet.toml")
SMALL = ["train.n_steps=20", "train.checkpoint_every=20", "train.log_every=1"]


def _one_error_line(result, echoed_log: bool = False) -> str:
    """The single `error:` line of a refused command (exit status 2, no traceback). A training run echoes its
    log lines to stderr as well (`--progress off`): the error is then the last line, and the only error."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:] and (echoed_log or len(lines) == 1), result.stderr
    assert "Traceback" not in result.output
    return lines[-1]


def _invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def _rows(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "metrics.csv").open()))


def test_a_corrupt_latest_checkpoint_resumes_from_the_one_before(tmp_path):
    run = tmp_path / "run"
    train_local(load_config(CONFIG, SMALL + ["train.steps=40"]), run)
    ckpts = run / "checkpoints"
    assert [load_checkpoint(ckpts / name)["updates"] for name in ("previous.pt", "latest.pt")] == [1, 2]
    (ckpts / "latest.pt").write_bytes((ckpts / "latest.pt").read_bytes()[:1000])  # truncated
    result = _invoke("train", "-c", CONFIG, "--out", str(run), "--resume", "--steps", "60", "--progress", "off",
                     *[arg for kv in SMALL for arg in ("--set", kv)])
    assert result.exit_code == 0, (result.output, result.exception)
    log = (run / "logs" / "learner.log").read_text()
    assert "latest.pt: not a readable checkpoint" in log and "resuming from the checkpoint before it" in log
    assert "resumed at update 1" in log
    assert [int(r["update"]) for r in _rows(run)] == [1, 2, 3]
    # both broken: one line naming the file, nothing else
    for name in ("latest.pt", "previous.pt"):
        (ckpts / name).write_bytes(b"garbage")
    line = _one_error_line(_invoke("train", "-c", CONFIG, "--out", str(run), "--resume", "--progress", "off"))
    assert "latest.pt: not a readable checkpoint" in line and "previous.pt, is not readable either" in line


def test_a_port_in_use_is_named(tmp_path):
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base > 65533:
            continue
        blocker = socket.socket()
        try:
            blocker.bind(("127.0.0.1", base + 1))
        except OSError:
            blocker.close()
            continue
        try:
            blocker.listen()
            line = _one_error_line(_invoke("learner", "-c", CONFIG, "--out", str(tmp_path / "run"), "--bind",
                                           f"tcp://127.0.0.1:{base}"))
        finally:
            blocker.close()
        assert f"port {base + 1} (dist.rollout_port) on 127.0.0.1 is in use" in line
        return
    pytest.skip("no free port pair found")


def test_an_out_that_cannot_be_a_directory_is_refused(tmp_path):
    plain = tmp_path / "plain-file"
    plain.write_text("not a directory")
    for command in (["train", "--progress", "off"], ["learner"]):
        line = _one_error_line(_invoke(*command, "-c", CONFIG, "--out", str(plain / "run")))
        assert f"cannot create it, {plain} is a file, not a directory" in line


def test_wildcard_and_unresolvable_hosts_get_their_own_messages(tmp_path):
    line = _one_error_line(_invoke("learner", "-c", CONFIG, "--out", str(tmp_path / "a"), "--set",
                                   "dist.host=0.0.0.0"))
    assert "every network interface of this machine" in line and "--insecure" in line
    line = _one_error_line(_invoke("learner", "-c", CONFIG, "--out", str(tmp_path / "b"), "--set",
                                   "dist.host=no-such-host.invalid", "--insecure"))
    assert "dist.host 'no-such-host.invalid' does not resolve" in line
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before anything was written


def test_a_deleted_metrics_csv_is_started_again_with_its_header(tmp_path):
    run = tmp_path / "run"

    def delete_after_first(row: dict) -> None:
        if row["update"] == 1:
            (run / "metrics.csv").unlink()

    train_local(load_config(CONFIG, SMALL + ["train.steps=60"]), run, progress=delete_after_first)
    assert [int(r["update"]) for r in _rows(run)] == [2, 3]  # the header came back with the rows after it
    assert "metrics.csv was deleted during the run" in (run / "logs" / "learner.log").read_text()


def test_updates_skipped_again_and_again_stop_the_run_with_one_line(tmp_path):
    run = tmp_path / "run"
    line = _one_error_line(_invoke("train", "-c", CONFIG, "--out", str(run), "--steps", "200", "--progress", "off",
                                   "--set", "train.skip_grad_norm=1e-12", "--set", "train.max_skipped_updates=2",
                                   *[arg for kv in SMALL for arg in ("--set", kv)]), echoed_log=True)
    assert "2 updates in a row were skipped" in line and "train.skip_grad_norm" in line
    rows = _rows(run)
    assert [r["skipped_updates"] for r in rows] == ["1", "2"] and all(r["loss"] == "" for r in rows)
    # the checkpoint written after the first (skipped) update: counters moved on, weights finite
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert ckpt["updates"] == 1 and all(torch.isfinite(t).all() for t in ckpt["model"].values())
