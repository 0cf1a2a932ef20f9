"""Atomic, resumable checkpoints: write to a temporary file in the same folder, fsync, rename. A crash
mid-write leaves the previous checkpoint intact, never a truncated one. torch is imported only to read or
write one, so a supervisor that only checks for a checkpoint stays light."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from common.errors import InputError


def checkpoint_path(out_dir: str | Path, resume: bool) -> Path:
    """RUN/checkpoints/latest.pt, after refusing a fresh run over an old one and a resume without one."""
    out = Path(out_dir)
    latest = out / "checkpoints" / "latest.pt"
    if latest.exists() and not resume:
        raise InputError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if resume and not latest.exists():
        raise InputError(f"--resume: no checkpoint at {latest}")
    return latest


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write `payload` (tensors, numpy arrays, plain values) to `path` atomically."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (our own files, so full unpickling is allowed)."""
    import torch

    with open(path, "rb") as fh:
        return torch.load(fh, map_location="cpu", weights_only=False)
