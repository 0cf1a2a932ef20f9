"""Atomic, resumable checkpoints: write to a temporary file in the same folder, fsync, rename. A crash
mid-write leaves the previous checkpoint intact, never a truncated one. torch is imported only to read or
write one, so a supervisor that only checks for a checkpoint stays light."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from common.errors import InputError


def check_run_dir(out_dir: str | Path) -> None:
    """Refuse, with one line, an --out that cannot be a run directory: an existing file, a path below a
    file, or below a folder this user cannot write to. Nothing is created."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: this is a file, not a directory")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != out:
        if not existing.is_dir():
            raise InputError(f"--out {out}: cannot create it, {existing} is a file, not a directory")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise InputError(f"--out {out}: cannot create it, {existing} is not writable")
    elif not os.access(out, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: the directory is not writable")


def checkpoint_path(out_dir: str | Path, resume: bool) -> Path:
    """RUN/checkpoints/latest.pt, after refusing an --out that cannot be a directory, a fresh run over an old
    one and a resume without a checkpoint (latest.pt, or previous.pt to fall back on)."""
    out = Path(out_dir)
    check_run_dir(out)
    latest = out / "checkpoints" / "latest.pt"
    found = latest.exists() or latest.with_name("previous.pt").exists()
    if found and not resume:
        raise InputError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if resume and not found:
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


def keep_previous(path: Path, name: str) -> None:
    """Make the file at `path` (if any) also available as `name` in its folder, atomically: a hard link (or a
    copy where links are not possible) under a temporary name, renamed over the old one. `path` itself is
    replaced later by `save_checkpoint`, which writes a new file, so the two never share their bytes after."""
    if not path.exists():
        return
    target = path.with_name(name)
    tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:
        shutil.copyfile(path, tmp)
    os.replace(tmp, target)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (our own files, so full unpickling is allowed)."""
    import torch

    with open(path, "rb") as fh:
        return torch.load(fh, map_location="cpu", weights_only=False)
