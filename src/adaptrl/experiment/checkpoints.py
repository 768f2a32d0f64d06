"""Checkpoints: an algorithm's state pytree with named fields, written atomically.

Format (version 2): one ``.npz`` file, ``run_dir/checkpoints/latest.npz`` (the one before it kept
as ``previous.npz``, the fallback if ``latest.npz`` is damaged; with ``snapshot_every`` = N also
a copy after every N-th iteration, ``itr_<N>.npz``, which ``eval`` and ``video`` load with
``--iteration``), holding every array
leaf of the state under its pytree path (``.meta_params['policy']['params']['output']['kernel']``
…) and a JSON record ``__meta__`` with the format version, the seed, the number of completed
iterations, the environment-step counter and the wall-clock time used so far. Restoring puts the
saved leaves into the structure of a freshly initialised state, matched by name, with its dtypes,
so the resumed run continues bit for bit. All randomness of iteration ``i`` is derived from
``(seed, i)``, so no RNG state beyond the seed is needed.

Why our own format rather than Orbax or pickle: a pickle executes code when someone else's run is
loaded, and Orbax brings TensorStore and asynchronous machinery that a single-process,
few-megabyte state does not need. ``.npz`` is loaded with ``allow_pickle=False`` (plain arrays
only), opens in any numpy, and names every leaf, so a mismatch says which field differs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from adaptrl.errors import ConfigError
from adaptrl.runfiles import CHECKPOINT_DIR

LATEST = "latest.npz"
PREVIOUS = "previous.npz"
"""The checkpoint before ``latest.npz``: the fallback when ``latest.npz`` is damaged (e.g. its
disk filled, or someone overwrote it)."""
FORMAT_VERSION = 2
_META = "__meta__"
SNAPSHOT_PREFIX = "itr_"


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / LATEST


def snapshot_path(run_dir: str | Path, iteration: int) -> Path:
    """The kept checkpoint after ``iteration`` completed iterations (``snapshot_every``)."""
    return Path(run_dir) / CHECKPOINT_DIR / f"{SNAPSHOT_PREFIX}{int(iteration):06d}.npz"


def snapshot_iterations(run_dir: str | Path) -> list[int]:
    """The iteration counts of ``run_dir``'s kept snapshots, ascending."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    found = []
    for path in folder.glob(f"{SNAPSHOT_PREFIX}*.npz"):
        number = path.stem[len(SNAPSHOT_PREFIX):]
        if number.isdigit():
            found.append(int(number))
    return sorted(found)


def named_leaves(tree: Any) -> dict[str, np.ndarray]:
    """``{pytree path: numpy array}`` for every leaf of ``tree``."""
    flat, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in flat}


def save_checkpoint(run_dir: str | Path, state: Any, meta: dict[str, Any], *, snapshot: bool = False) -> Path:
    """Write ``state`` (a pytree) and ``meta`` (JSON-able scalars) atomically (temporary file +
    ``os.replace``: a crash never leaves a half-written checkpoint); with ``snapshot`` also keep a
    copy as :func:`snapshot_path` of ``meta["iteration"]``."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    arrays = named_leaves(state)
    arrays[_META] = np.asarray(json.dumps({"format": FORMAT_VERSION, **meta}))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        if snapshot:
            kept = snapshot_path(run_dir, meta["iteration"])
            partial = kept.with_name(".tmp-" + kept.name)
            try:
                shutil.copyfile(tmp, partial)
                os.replace(partial, kept)
            finally:
                partial.unlink(missing_ok=True)
        if (folder / LATEST).is_file():
            os.replace(folder / LATEST, folder / PREVIOUS)
        os.replace(tmp, folder / LATEST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return folder / LATEST


def read_checkpoint(run_dir: str | Path, iteration: int | None = None
                    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The named arrays and the metadata of ``run_dir``'s latest checkpoint, or of its snapshot
    after ``iteration`` iterations; one clear :class:`ConfigError` if it is missing, damaged or of
    another format."""
    if iteration is not None:
        return _read_npz(_existing_snapshot(run_dir, int(iteration)))
    path = checkpoint_path(run_dir)
    if not path.is_file():
        legacy = path.with_suffix(".pkl")
        if legacy.is_file():
            raise ConfigError(f"{legacy} was written by an older adaptrl (pickle checkpoints, format 1), "
                              "which this version does not load; retrain, or use the adaptrl version that "
                              "wrote it.")
        raise ConfigError(f"{run_dir} has no checkpoint ({path} is missing); it was stopped before "
                          "its first checkpoint (delete it and start again) or is not a run directory.")
    try:
        return _read_npz(path)
    except ConfigError as damaged:
        previous = path.with_name(PREVIOUS)
        if not previous.is_file():
            raise
        try:
            arrays, meta = _read_npz(previous)
        except ConfigError:
            raise damaged from None
        warnings.warn(f"{damaged} Falling back to {previous} (iteration {meta['iteration']}); the "
                      "iterations after it are redone.", UserWarning, stacklevel=2)
        return arrays, meta


def _existing_snapshot(run_dir: str | Path, iteration: int) -> Path:
    path = snapshot_path(run_dir, iteration)
    if path.is_file():
        return path
    kept = snapshot_iterations(run_dir)
    if kept:
        listed = ", ".join(str(i) for i in kept[:20]) + (", …" if len(kept) > 20 else "")
        raise ConfigError(f"{run_dir} has no snapshot after iteration {iteration}; it keeps {listed} "
                          "(omit --iteration for the latest checkpoint).")
    raise ConfigError(f"{run_dir} keeps no snapshots (it was trained with snapshot_every=0, the "
                      "default), so only its latest checkpoint can be loaded; omit --iteration, or "
                      "train with --set snapshot_every=N.")


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(str(arrays.pop(_META)))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError) as exc:
        raise ConfigError(f"{path} is damaged or not an adaptrl checkpoint ({type(exc).__name__}: {exc}); "
                          "delete it to restart the run from scratch.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise ConfigError(f"{path} is not an adaptrl checkpoint of format {FORMAT_VERSION} "
                          f"(found format {meta.get('format') if isinstance(meta, dict) else None!r}).")
    return arrays, meta


def restore_state(template: Any, arrays: dict[str, np.ndarray], where: str = "checkpoint") -> Any:
    """``template``'s structure filled with ``arrays`` (matched by pytree path, cast to the
    template's dtypes); a clear :class:`ConfigError` naming the fields that differ."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    names = [jax.tree_util.keystr(path) for path, _ in flat]
    missing = [n for n in names if n not in arrays]
    unexpected = [n for n in arrays if n not in set(names)]
    if missing or unexpected:
        raise ConfigError(f"{where} does not match this configuration (different state structure): "
                          f"missing {missing[:5]}, unexpected {unexpected[:5]}.")
    leaves = []
    for name, (_, leaf) in zip(names, flat, strict=True):
        want = np.asarray(leaf)
        got = arrays[name]
        if got.shape != want.shape:
            raise ConfigError(f"{where}: field {name} has shape {got.shape}, this configuration needs "
                              f"{want.shape}.")
        leaves.append(got.astype(want.dtype, copy=False))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def has_checkpoint(run_dir: str | Path) -> bool:
    return checkpoint_path(run_dir).is_file()
