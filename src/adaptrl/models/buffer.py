"""A fixed-capacity FIFO buffer of real transitions (numpy), the data the ensemble is fitted to.

MB-MPO keeps the last 1e5 transitions (thesis App. B.3; docs/model-based.md). The capacity fixes
every array's shape, so a buffer is a checkpointable pytree of constant shapes; ``size`` and
``head`` are 0-d arrays for the same reason. Functions return new buffers and never mutate their
arguments.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from adaptrl.errors import ConfigError, require_positive_int


class TransitionBuffer(NamedTuple):
    """``obs``/``next_obs [C, obs]``, ``act [C, act]`` float32; ``size``: rows filled (≤ C);
    ``head``: the next row to write (the oldest row once full)."""

    obs: np.ndarray
    act: np.ndarray
    next_obs: np.ndarray
    size: np.ndarray
    head: np.ndarray


def empty_buffer(capacity: int, obs_dim: int, act_dim: int) -> TransitionBuffer:
    """An empty buffer of ``capacity`` rows."""
    c = require_positive_int("buffer capacity", capacity)
    o = require_positive_int("obs_dim", obs_dim)
    a = require_positive_int("act_dim", act_dim)
    return TransitionBuffer(np.zeros((c, o), np.float32), np.zeros((c, a), np.float32),
                            np.zeros((c, o), np.float32), np.asarray(0, np.int64), np.asarray(0, np.int64))


def add_transitions(buffer: TransitionBuffer, obs: np.ndarray, act: np.ndarray,
                    next_obs: np.ndarray) -> TransitionBuffer:
    """The buffer with ``n`` rows appended; when full, the oldest rows are overwritten (FIFO);
    with ``n > C`` only the newest C rows are kept."""
    capacity, obs_dim = buffer.obs.shape
    act_dim = buffer.act.shape[1]
    obs, act, next_obs = (np.asarray(x, np.float32) for x in (obs, act, next_obs))
    n = obs.shape[0] if obs.ndim == 2 else -1
    if obs.shape != (n, obs_dim) or next_obs.shape != (n, obs_dim) or act.shape != (n, act_dim):
        raise ConfigError(f"add_transitions needs obs [n, {obs_dim}], act [n, {act_dim}] and next_obs "
                          f"[n, {obs_dim}] with the same n, got {obs.shape}, {act.shape} and "
                          f"{next_obs.shape}.")
    head, size = int(buffer.head), int(buffer.size)
    keep = min(n, capacity)
    # rows that would be overwritten within this same call never need to be written
    rows = (head + n - keep + np.arange(keep)) % capacity
    new = [x.copy() for x in (buffer.obs, buffer.act, buffer.next_obs)]
    for dst, src in zip(new, (obs, act, next_obs), strict=True):
        dst[rows] = src[n - keep:]
    return TransitionBuffer(*new, size=np.asarray(min(size + n, capacity), np.int64),
                            head=np.asarray((head + n) % capacity, np.int64))


def buffer_contents(buffer: TransitionBuffer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(obs, act, next_obs)`` of the filled rows, oldest first."""
    capacity = buffer.obs.shape[0]
    size, head = int(buffer.size), int(buffer.head)
    rows = (head - size + np.arange(size)) % capacity
    return buffer.obs[rows], buffer.act[rows], buffer.next_obs[rows]
