"""Training presets: `paper` reproduces the original recipe bit for bit, `tuned` changes only the keys it
names, `tuned-lr` is `tuned` plus the decaying learning rate, a preset's `base` chain resolves in order, the
precedence is config file < preset < --set, and bad presets are one line and exit 2."""

from __future__ import annotations

from pathlib import Path

from checkpoint_helpers import assert_same_params
from click.testing import CliRunner

from common.config import load_config
from launch.cli import main
from launch.presets import preset_overrides
from launch.study_spec import load_study

REPO = Path(__file__).resolve().parents[1]


def _train(out: Path, *extra: str) -> None:
    result = CliRunner().invoke(main, ["train", "-c", str(REPO / "configs" / "ia2c.toml"), "--steps", "40",
                                       "--out", str(out), "--progress", "off", *extra])
    assert result.exit_code == 0, result.output


def test_the_paper_preset_trains_exactly_what_no_preset_trains(tmp_path):
    _train(tmp_path / "plain")
    _train(tmp_path / "paper", "--preset", "paper")
    assert_same_params(tmp_path / "plain" / "checkpoints" / "latest.pt",
                       tmp_path / "paper" / "checkpoints" / "latest.pt", atol=0.0)
    assert (tmp_path / "plain" / "config.toml").read_text().split("\n", 3)[3] == \
        (tmp_path / "paper" / "config.toml").read_text().split("\n", 3)[3]  # same resolved config


def test_the_tuned_preset_changes_only_its_own_keys():
    plain = load_config(REPO / "configs" / "powernet.toml").to_dict()
    tuned = load_config(REPO / "configs" / "powernet.toml", preset_overrides("tuned")).to_dict()
    changed = {f"{s}.{k}" for s, table in tuned.items() for k, v in table.items() if plain[s][k] != v}
    assert changed == {"train.num_envs", "train.loss", "train.optimizer", "train.lr", "train.entropy_coef"}
    assert tuned["train"]["spatial_discount"] == 0.75  # the algorithm's own key is untouched


def test_the_tuned_lr_preset_is_tuned_plus_the_linear_learning_rate_decay_only():
    tuned = load_config(REPO / "configs" / "powernet.toml", preset_overrides("tuned")).to_dict()
    decayed = load_config(REPO / "configs" / "powernet.toml", preset_overrides("tuned-lr")).to_dict()
    changed = {f"{s}.{k}": v for s, table in decayed.items() for k, v in table.items() if tuned[s][k] != v}
    assert changed == {"train.lr_schedule": "linear"}


def test_a_preset_overrides_the_config_file_and_set_overrides_the_preset(tmp_path):
    preset = tmp_path / "mine.toml"
    preset.write_text("[train]\nspatial_discount = 0.5\nlr = 1e-3\n")
    cfg = load_config(REPO / "configs" / "powernet.toml", [*preset_overrides(str(preset)), "train.lr=2e-3"])
    assert cfg.train.spatial_discount == 0.5 and cfg.train.lr == 2e-3


def test_a_preset_starts_from_its_base_and_overrides_it(tmp_path):
    (tmp_path / "parent.toml").write_text("[train]\nlr = 1e-3\nnum_envs = 4\n")
    (tmp_path / "child.toml").write_text('base = "parent.toml"\n[train]\nlr = 2e-3\n[env]\nscenario = "paper"\n')
    (tmp_path / "grandchild.toml").write_text('base = "child.toml"\n[train]\nnum_envs = 2\n')
    cfg = load_config(REPO / "configs" / "powernet.toml", preset_overrides(str(tmp_path / "grandchild.toml")))
    assert (cfg.train.lr, cfg.train.num_envs, cfg.env.scenario) == (2e-3, 2, "paper")
    named = tmp_path / "named.toml"
    named.write_text('base = "tuned"\n[train]\nlr = 1e-4\n')  # a shipped preset by name
    cfg = load_config(REPO / "configs" / "powernet.toml", preset_overrides(str(named)))
    assert (cfg.train.lr, cfg.train.loss) == (1e-4, "ppo")


def test_a_bad_base_names_the_preset_that_holds_it(tmp_path):
    cases = {"loop_a.toml": ('base = "loop_b.toml"\n', "cycle through 'base'"),
             "loop_b.toml": ('base = "loop_a.toml"\n', "cycle through 'base'"),
             "number.toml": ("base = 3\n", "'base' must be a preset name"),
             "missing.toml": ('base = "fastest"\n', "missing.toml: base: unknown preset 'fastest'"),
             "bad_parent.toml": ('base = "number.toml"\n', "bad_parent.toml: base: number.toml: 'base' must")}
    for name, (text, _) in cases.items():
        (tmp_path / name).write_text(text)
    for name, (_, message) in cases.items():
        result = CliRunner().invoke(main, ["train", "-c", str(REPO / "configs" / "ia2c.toml"), "--preset",
                                           str(tmp_path / name), "--out", str(tmp_path / "run")])
        assert result.exit_code == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1


def test_an_unknown_or_broken_preset_is_one_line_and_exit_2(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("[train]\nlearning_rate = 1\n")
    for preset, message in (("fast", "unknown preset 'fast'"), (str(broken), "broken.toml: unknown config key "
                                                                               "train.learning_rate")):
        result = CliRunner().invoke(main, ["train", "-c", str(REPO / "configs" / "ia2c.toml"), "--preset", preset,
                                           "--out", str(tmp_path / "run")])
        assert result.exit_code == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_study_applies_its_preset_to_every_run(tmp_path):
    study = tmp_path / "study.toml"
    study.write_text('[study]\nalgorithms = ["ia2c", "powernet"]\nsystems = ["microgrid-6"]\nseeds = [0]\n'
                     'steps = 100\npreset = "tuned"\nset = ["train.lr=1e-4"]\ncontrollers = []\n')
    runs = load_study(study).runs
    assert [r.run_id for r in runs] == ["ia2c_mg6_base_s0", "powernet_mg6_base_s0"]  # ids do not change
    args = runs[0].set_args(load_study(study).common_set)
    assert 'train.loss="ppo"' in args and args.index("train.lr=0.0003") < args.index("train.lr=1e-4")
