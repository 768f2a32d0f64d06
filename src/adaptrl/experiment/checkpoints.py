"""Checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint holds the meta-parameters, the optimizer state, ProMP's η, the number of completed
iterations, the environment-step counter and the wall-clock time used so far. All randomness of
iteration ``i`` is derived from ``(seed, i)``, so no RNG state beyond the seed is needed to resume
exactly; the seed is in ``config.yaml`` and repeated here as a check.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from adaptrl.errors import ConfigError

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pkl"
FORMAT_VERSION = 1


def _to_numpy(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda x: np.asarray(x), jax.device_get(tree))


def save_checkpoint(run_dir: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (pytrees and scalars) to ``run_dir/checkpoints/latest.pkl`` atomically
    (temporary file + ``os.replace``: a crash never leaves a half-written checkpoint)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT_VERSION, **{k: _to_numpy(v) for k, v in payload.items()}}
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pkl")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / LATEST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return folder / LATEST


def load_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """The latest checkpoint of ``run_dir``; a clear :class:`ConfigError` if there is none."""
    path = Path(run_dir) / CHECKPOINT_DIR / LATEST
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no checkpoint ({path} is missing); it was stopped before "
                          "its first checkpoint (delete it and start again) or is not a run directory.")
    with open(path, "rb") as f:
        data = pickle.load(f)
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
        raise ConfigError(f"{path} is not an adaptrl checkpoint of format {FORMAT_VERSION}.")
    return data


def has_checkpoint(run_dir: str | Path) -> bool:
    return (Path(run_dir) / CHECKPOINT_DIR / LATEST).is_file()
