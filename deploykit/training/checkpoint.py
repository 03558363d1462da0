"""Training checkpoints: written atomically by rank 0, read back with ``weights_only=True``.

A checkpoint is a dict of tensors and plain values. ``state_dict`` always holds the trained module's
weights, so a baseline checkpoint doubles as a ``--weights`` file. ``meta`` records what the run was
asked to do; a run resumes only under the same meta.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from deploykit.checkpoints import read_torch_file
from deploykit.errors import ConfigError
from deploykit.fileio import atomic_path, write_text_atomic

FORMAT = "deploykit-train/1"
CHECKPOINT = "checkpoint.pt"


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename: never a half-written file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def write_csv(rows: list[Mapping[str, Any]], path: str | Path) -> Path:
    return write_text_atomic(path, pd.DataFrame(list(rows)).to_csv(index=False))


def read_checkpoint(path: str | Path, *, what: str = "checkpoint") -> dict[str, Any]:
    path = Path(path)
    state = read_torch_file(path, what=what, error=ConfigError)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a deploykit training checkpoint")
    return state


def check_resumable(saved_meta: Mapping[str, Any], meta: Mapping[str, Any], path: Path) -> None:
    """A run resumes only with the settings it started with (else its schedule would silently change)."""
    changed = sorted(key for key in set(saved_meta) | set(meta) if saved_meta.get(key) != meta.get(key))
    if changed:
        shown = "; ".join(f"{key}: {saved_meta.get(key)!r} → {meta.get(key)!r}" for key in changed[:4])
        raise ConfigError(f"cannot resume {path}: the run was started with other settings ({shown})")


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def plain(value: Any) -> Any:
    """Tuples and paths → lists and strings, so that meta compares equal after a save/load round trip."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
