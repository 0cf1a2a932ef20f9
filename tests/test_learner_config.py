"""Config schema: every shipped config loads; bad keys and types are errors that name the key (CLI exit 2)."""

from __future__ import annotations

import glob

import pytest
from click.testing import CliRunner

from common.algorithms import ALGORITHMS
from common.config import RETIRED_KEYS, config_digest, load_config
from common.errors import InputError
from launch.cli import main


def test_every_algorithm_has_one_config_that_states_only_its_own_keys():
    assert sorted(glob.glob("configs/*.toml")) == sorted(f"configs/{a}.toml" for a in ALGORITHMS)
    defaults = load_config(None)
    for algorithm in ALGORITHMS:
        cfg = load_config(f"configs/{algorithm}.toml")
        assert cfg.model.algorithm == algorithm
        # everything but the algorithm and its spatial discount is the schema's default (said once); MAPPO's
        # definition also fixes a shared actor and PPO with GAE
        assert cfg.env == defaults.env and cfg.dist == defaults.dist
        assert cfg.model.hidden == defaults.model.hidden
        own = {"spatial_discount"} | (MAPPO_RECIPE if algorithm == "mappo" else set())
        assert {k for k, v in cfg.to_dict()["train"].items() if v != defaults.to_dict()["train"][k]} <= own
        assert cfg.model.share_weights == (algorithm == "mappo")


MAPPO_RECIPE = {"loss", "gae_lambda"}


def test_a_run_file_with_retired_keys_loads_without_them(tmp_path):
    # run directories written before the episode length and control interval came from the system file
    old = tmp_path / "config.toml"
    old.write_text('[env]\nsystem = "microgrid-20"\nepisode_steps = 20\ncontrol_dt_s = 0.05\n')
    cfg = load_config(old)
    assert cfg.env.system == "microgrid-20" and "episode_steps" in RETIRED_KEYS["env"]
    assert "episode_steps" not in cfg.to_dict()["env"]
    with pytest.raises(InputError, match="env.episode_steps"):  # a user's override is still refused
        load_config(None, ["env.episode_steps=10"])


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers_are_refused_naming_the_key(value):
    with pytest.raises(InputError, match="train.lr: expected a finite number"):
        load_config(None, [f"train.lr={value}"])


def test_the_config_digest_covers_what_both_sides_must_share():
    base = load_config("configs/powernet.toml")
    assert config_digest(base) == config_digest(load_config("configs/powernet.toml", ["train.steps=5"]))
    assert config_digest(base) != config_digest(load_config("configs/powernet.toml", ["train.lr=0.1"]))
    assert config_digest(base) != config_digest(load_config("configs/powernet.toml", ['env.system="microgrid-20"']))


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
    cfg = load_config("configs/powernet.toml", ["train.lr=0.001", "train.gae_lambda=0.95",
                                                     "model.share_weights=true", "env.system=toy-graph"])
    assert cfg.train.lr == 0.001 and cfg.train.gae_lambda == 0.95
    assert cfg.model.share_weights is True and cfg.env.system == "toy-graph"


def test_cli_bad_config_key_exits_2_with_one_line(tmp_path):
    result = CliRunner().invoke(main, ["train", "-c", "configs/ia2c.toml", "--out", str(tmp_path / "r"),
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
