"""Training presets: named sets of config keys that apply to every algorithm alike, so that a comparison
stays fair (configs/presets/NAME.toml: `paper`, the original recipe; `tuned`, what closes the loop).

A preset becomes `--set` strings placed before the user's own: its keys override the config file, and an
explicit `--set` overrides the preset. A preset may start from another with a top-level `base = "NAME"`: the
base's keys come first and the preset's own keys override them, so a variant names only what it changes
(docs/algorithms.md#presets).
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


def _resolved_tables(name_or_path: str, chain: tuple[str, ...] = ()) -> dict[str, dict]:
    """The preset's tables with its `base` chain applied (the base's keys first, the preset's own on top)."""
    path = preset_path(name_or_path)
    if str(path.resolve()) in chain:
        raise InputError(f"{path.name}: presets form a cycle through 'base'")
    data = read_toml(path, "preset file")
    base = data.pop("base", None)
    if base is not None and not isinstance(base, str):
        raise InputError(f"{path.name}: 'base' must be a preset name, got {base!r}")
    try:
        from_dict(data)
    except InputError as exc:
        raise InputError(f"{path.name}: {exc}") from None
    tables: dict[str, dict] = {}
    if base is not None:
        if (base.endswith(".toml") or "/" in base) and not Path(base).is_absolute():
            base = str(path.parent / base)  # a user's base file sits beside the preset that names it
        try:
            tables = _resolved_tables(base, (*chain, str(path.resolve())))
        except InputError as exc:
            raise InputError(f"{path.name}: base: {exc}") from None
    for section, table in data.items():
        tables.setdefault(section, {}).update(table)
    return tables


def preset_overrides(name_or_path: str) -> list[str]:
    """The preset (with its `base` chain) as `section.key=value` strings, validated like a config file."""
    tables = _resolved_tables(name_or_path)
    return [f"{section}.{key}={json.dumps(value)}" for section, table in tables.items() for key, value in table.items()]
