"""User-facing errors: one clear line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from common.errors import InputError

F = TypeVar("F", bound=Callable[..., Any])


def exit_on_user_error(func: F) -> F:
    """Report InputError / FileNotFoundError as `error: ...` on stderr and exit with status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (InputError, FileNotFoundError) as exc:
            text = str(exc).strip().splitlines()
            print(f"error: {text[0] if text else type(exc).__name__}", file=sys.stderr)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
