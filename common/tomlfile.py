"""Reading a user's TOML file, with the two failures a user can fix turned into one-line `InputError`s.

Run configs, study configs and system files all come from users; they share this reader so a missing
file or a syntax error reads the same wherever it happens.
"""

from pathlib import Path
from typing import Any

import tomllib

from common.errors import InputError


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """The parsed document at path; `what` names the file's role in the error ("config file", ...)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{what} {path}: not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{what} {path}: cannot be read ({exc})") from None


def named_toml(directory: Path, name_or_path: str | Path, what: str) -> Path:
    """A shipped file `directory/NAME.toml` by name, or a user's file by path (anything ending in .toml or
    holding a "/"); an unknown name lists the shipped ones. `what` names the kind ("system", "scenario")."""
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text:
        path = Path(text)
        if not path.is_file():
            raise InputError(f"{what} file not found: {path}")
        return path
    path = directory / f"{text}.toml"
    if not path.is_file():
        choices = ", ".join(sorted(p.stem for p in directory.glob("*.toml")))
        raise InputError(f"unknown {what} {text!r}; choose one of {choices} or give a .toml path")
    return path
