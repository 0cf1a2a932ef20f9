"""Training presets: named sets of config keys that apply to every algorithm alike, so that a comparison
stays fair (configs/presets/NAME.toml: `paper`, the original recipe; `tuned`, what closes the loop).

A preset becomes `--set` strings placed before the user's own: its keys override the config file, and an
explicit `--set` overrides the preset.
"""

from __future__ import annotations

import json
from pathlib import Path

from common.config import from_dict
from common.errors import InputError
from common.tomlfile import read_toml

PRESETS_DIR = Path(__file__).resolve().parent.parent / "configs" / "presets"


def preset_path(name_or_path: str) -> Path:
    """A preset's file: a path as given, or configs/presets/NAME.toml of this repository."""
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        path = Path(name_or_path)
    else:
        path = PRESETS_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.toml")))
            raise InputError(f"unknown preset {name_or_path!r} (known: {known}; or give a .toml path)")
    return path


def preset_overrides(name_or_path: str) -> list[str]:
    """The preset as `section.key=value` strings, validated like a config file."""
    path = preset_path(name_or_path)
    data = read_toml(path, "preset file")
    try:
        from_dict(data)
    except InputError as exc:
        raise InputError(f"{path.name}: {exc}") from None
    return [f"{section}.{key}={json.dumps(value)}" for section, table in data.items() for key, value in table.items()]
