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
