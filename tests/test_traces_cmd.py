"""`powernet traces`: the best of several trained runs beside the gap file's strongest baseline and droop.
Two tiny runs (40 training steps) and a gap file of two episodes on microgrid-6; deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from launch.cli import main
from simsvc.gap import batch_episodes, gap_controller
from simsvc.scenarios import load_scenario
from simsvc.systems import load_system

REPO = Path(__file__).resolve().parents[1]
SEEDS = [2000, 2025]  # the gap file's evaluation seeds, and the selection seeds of --select-episodes 2


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two trained runs (IA2C and PowerNet, 40 steps on classic) and a gap file of microgrid-6 `stress`."""
    root = tmp_path_factory.mktemp("traces")
    runner = CliRunner()
    runs = {}
    for algorithm in ("ia2c", "powernet"):
        runs[algorithm] = root / algorithm
        result = runner.invoke(main, ["train", "-c", str(REPO / "configs" / f"{algorithm}.toml"), "--steps", "40",
                                      "--out", str(runs[algorithm]), "--progress", "off"])
        assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["gap", "--system", "microgrid-6", "--scenario", "stress", "--episodes", "2",
                                  "--train-seeds", "1", "--fit-sweeps", "1", "--no-figures",
                                  "--out", str(root / "gap")])
    assert result.exit_code == 0, result.output
    return {**runs, "gap": root / "gap" / "mg6-stress.json", "root": root}


def _traces(inputs: dict[str, Path], gap: Path, out: Path) -> dict:
    result = CliRunner().invoke(main, ["traces", "--gap", str(gap), "--run", str(inputs["ia2c"]), "--run",
                                       str(inputs["powernet"]), "--select-episodes", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and out.stat().st_size > 10_000
    return json.loads(out.with_suffix(".json").read_text())


def test_the_best_run_is_drawn_beside_the_strongest_baseline_and_droop(inputs: dict[str, Path], tmp_path: Path):
    record = _traces(inputs, inputs["gap"], tmp_path / "fig" / "mg6-stress-traces.png")
    gap = json.loads(inputs["gap"].read_text())
    means = {Path(r["run"]).name: r["mean_return"] for r in record["runs"]}
    assert set(means) == {"ia2c", "powernet"} and means["ia2c"] != means["powernet"]
    assert Path(record["chosen"]["run"]).name == max(means, key=means.get)
    assert record["chosen"]["trained_scenario"] == "classic" and record["scenario"] == "stress"
    assert record["selection_seeds"] == SEEDS == gap["eval_seeds"]
    # the drawn episode (seed 2000, fine trace) is the first selection episode, as `powernet evaluate` runs it
    assert record["chosen"]["drawn_episode_return"] == pytest.approx(record["chosen"]["returns"][0], abs=1e-4)
    rows = gap["controllers"]
    strongest = max((n for n in rows if n not in ("oracle", "droop")), key=lambda n: rows[n]["mean_return"])
    assert record["baseline"]["name"] == strongest
    for ref in ("baseline", "droop"):
        assert record[ref]["mean_return"] == pytest.approx(rows[record[ref]["name"]]["mean_return"], abs=1e-5)
    assert record["command"].startswith("powernet traces") and record["commit"]


def test_a_fitted_baseline_is_rebuilt_from_the_gap_file(inputs: dict[str, Path], tmp_path: Path):
    """With the fitted local rule the strongest baseline left, its fitted gains and offsets drive it."""
    gap = json.loads(inputs["gap"].read_text())
    gap["controllers"] = {k: v for k, v in gap["controllers"].items() if k in ("droop", "local-fit", "oracle")}
    path = tmp_path / "gap-fit.json"
    path.write_text(json.dumps(gap))
    record = _traces(inputs, path, tmp_path / "fit.png")
    assert record["baseline"]["name"] == "local-fit"
    system = load_system("microgrid-6")
    expected = batch_episodes(system, load_scenario("stress"), SEEDS,
                              gap_controller("local-fit", system, gap["fitted"]))["returns"]
    assert record["baseline"]["returns"] == pytest.approx(list(expected), abs=1e-9)
    assert record["baseline"]["mean_return"] == pytest.approx(gap["controllers"]["local-fit"]["mean_return"], abs=1e-5)


def _exits_2(args: list[str], named: str) -> None:
    result = CliRunner().invoke(main, ["traces", *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_bad_inputs_exit_2_with_one_line(inputs: dict[str, Path], tmp_path: Path):
    out = tmp_path / "x.png"
    run = ["--run", str(inputs["ia2c"]), "--out", str(out)]
    _exits_2(["--gap", str(tmp_path / "missing.json"), *run], "gap file not found")
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"system": "microgrid-6", "scenario": "stress"}))
    _exits_2(["--gap", str(partial), *run], "missing controllers, fitted")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    _exits_2(["--gap", str(broken), *run], "not a JSON file")
    bare = tmp_path / "bare-run"
    (bare / "checkpoints").mkdir(parents=True)
    (bare / "config.toml").write_text((inputs["ia2c"] / "config.toml").read_text())
    gap = ["--gap", str(inputs["gap"]), "--out", str(out)]
    _exits_2([*gap, "--run", str(inputs["ia2c"]), "--run", str(bare)], "no checkpoint at")
    _exits_2([*gap, "--run", str(tmp_path / "nowhere")], "no config.toml in")
    other = tmp_path / "other-system"
    (other / "checkpoints").mkdir(parents=True)
    (other / "config.toml").write_text((inputs["ia2c"] / "config.toml").read_text()
                                       .replace('system = "microgrid-6"', 'system = "microgrid-20"'))
    _exits_2([*gap, "--run", str(other)], "trained on microgrid-20, the gap file is for microgrid-6")
    _exits_2([*gap, "--run", str(inputs["ia2c"]), "--select-episodes", "0"], "--select-episodes")
    assert not out.exists()


def test_gap_table_only_rebuilds_the_measured_table_from_the_json_files(inputs: dict[str, Path], tmp_path: Path):
    import shutil

    folder = tmp_path / "gap"
    shutil.copytree(inputs["gap"].parent, folder)
    measured_table = (folder / "gap-mg6.md").read_text()
    (folder / "gap-mg6.md").unlink()
    runner = CliRunner()
    result = runner.invoke(main, ["gap", "--system", "microgrid-6", "--scenario", "stress", "--table-only",
                                  "--out", str(folder)])
    assert result.exit_code == 0, result.output
    assert (folder / "gap-mg6.md").read_text() == measured_table
    assert "| stress |" in measured_table
    # a scenario without a result file, or a file that measured another scenario, is one line and exit 2
    missing = runner.invoke(main, ["gap", "--system", "microgrid-6", "--scenario", "stress,paper", "--table-only",
                                   "--out", str(folder)])
    assert missing.exit_code == 2 and "mg6-paper.json" in missing.output
    shutil.copy(folder / "mg6-stress.json", folder / "mg6-paper.json")
    other = runner.invoke(main, ["gap", "--system", "microgrid-6", "--scenario", "paper", "--table-only",
                                 "--out", str(folder)])
    assert other.exit_code == 2 and "measured microgrid-6 · stress" in other.output
