"""Config schema: every shipped config loads; bad keys and types are errors that name the key (CLI exit 2)."""

from __future__ import annotations

import glob

import pytest
from click.testing import CliRunner

from common.config import ALGORITHMS, load_config
from common.errors import InputError
from launch.cli import main


def test_every_algorithm_system_pair_has_a_valid_config():
    files = sorted(glob.glob("configs/*_mg*.toml"))
    expected = {f"configs/{a}_{s}.toml" for a in ALGORITHMS for s in ("mg6", "mg20")}
    assert expected <= set(files)
    for path in expected:
        cfg = load_config(path)
        assert cfg.model.algorithm == path.split("/")[1].split("_")[0]


def test_unknown_key_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[train]\nlearning_rate = 0.1\n')
    with pytest.raises(InputError, match="train.learning_rate"):
        load_config(bad)


def test_wrong_type_is_an_error_naming_the_key():
    with pytest.raises(InputError, match="train.n_steps"):
        load_config(None, ['train.n_steps="twenty"'])
    with pytest.raises(InputError, match="model.algorithm"):
        load_config(None, ['model.algorithm="qmix"'])


def test_set_overrides_parse_toml_values():
    cfg = load_config("configs/powernet_mg6.toml", ["train.lr=0.001", "train.gae_lambda=0.95",
                                                     "model.share_weights=true", "env.system=toy-graph"])
    assert cfg.train.lr == 0.001 and cfg.train.gae_lambda == 0.95
    assert cfg.model.share_weights is True and cfg.env.system == "toy-graph"


def test_cli_bad_config_key_exits_2_with_one_line(tmp_path):
    result = CliRunner().invoke(main, ["train", "-c", "configs/ia2c_mg6.toml", "--out", str(tmp_path / "r"),
                                       "--set", "train.nope=1"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.nope" in lines[0]


@pytest.mark.parametrize("command, role", [(["train", "-c"], "config file"), (["study", "-c"], "study config")])
def test_cli_missing_or_broken_toml_exits_2_naming_the_file_and_its_role(tmp_path, command, role):
    broken = tmp_path / "broken.toml"
    broken.write_text("[train]\nsteps = \n")
    for path, reason in ((tmp_path / "missing.toml", "not found"), (broken, "not valid TOML")):
        result = CliRunner().invoke(main, [*command, str(path), "--out", str(tmp_path / "out")])
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and role in lines[0] and reason in lines[0] and str(path) in lines[0]
    assert not (tmp_path / "out").exists()
