"""Log set-up shared by every service: `time level service[pid] message`, to a file and optionally stderr."""

from __future__ import annotations

import logging
import os
from pathlib import Path


def setup_logging(path: str | Path, service: str, echo: bool = False) -> logging.Logger:
    """A logger named `service` writing to `path` (and stderr when `echo`); idempotent per path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"powernet.{service}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter(f"%(asctime)s %(levelname)s {service}[{os.getpid()}] %(message)s")
    handlers: list[logging.Handler] = [logging.FileHandler(path)]
    if echo:
        handlers.append(logging.StreamHandler())
    for handler in handlers:
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    return logger
