"""Model-bias diagnostics: how open-loop predictions drift from real trajectories.

Compounding errors (thesis §3.2) make a model that is accurate one step ahead wrong many steps
ahead; App. A.3 shows a policy exploiting exactly that. :func:`k_step_errors` measures it on real
trajectories (docs/model-based.md).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from adaptrl.errors import ConfigError, require_positive_int
from adaptrl.models.ensemble import EnsembleParams, EnsembleSpec, next_obs


def k_step_errors(spec: EnsembleSpec, params: EnsembleParams, observations: Any, actions: Any, mask: Any,
                  k: int, *, final_observations: Any | None = None) -> np.ndarray:
    """``[k]``: for j = 1…k, the mean squared j-step open-loop prediction error.

    From every start ``s_t`` each member predicts ``ŝ_{t+j}`` by applying itself j times with the
    recorded actions ``a_t … a_{t+j−1}`` (its mean prediction, for probabilistic members too);
    the error ``(ŝ_{t+j} − s_{t+j})²`` is averaged over members, start times and state dims::

        e_j = mean_{k, (n, t) ∈ W_j, i} (ŝ^k_{t+j} − s_{t+j})_i²

    ``observations [N, T, obs]``, ``actions [N, T, act]``, ``mask [N, T]`` (1 on real steps);
    ``final_observations [N, obs]``, if given, is the state after step T − 1. A window (n, t) is in
    ``W_j`` when the steps t … t+j−1 are real and ``s_{t+j}`` is known: a real step's state
    (``t + j < T``), or ``final_observations`` when ``t + j = T``. The state after a terminating
    step (followed by a masked step) is not known, so those windows are left out. ``e_j`` is NaN
    when ``W_j`` is empty (thesis §3.2, App. A.3)."""
    k = require_positive_int("k (prediction steps)", k)
    observations = np.asarray(observations, np.float32)
    actions = np.asarray(actions, np.float32)
    mask = np.asarray(mask, np.float32)
    if observations.ndim != 3 or observations.shape[-1] != spec.obs_dim:
        raise ConfigError(f"observations must be [N, T, {spec.obs_dim}], got {observations.shape}.")
    n, t = observations.shape[:2]
    if actions.shape != (n, t, spec.act_dim) or mask.shape != (n, t):
        raise ConfigError(f"actions must be [{n}, {t}, {spec.act_dim}] and mask [{n}, {t}] to match "
                          f"observations {observations.shape}, got {actions.shape} and {mask.shape}.")
    has_final = final_observations is not None
    if has_final:
        final = np.asarray(final_observations, np.float32)
        if final.shape != (n, spec.obs_dim):
            raise ConfigError(f"final_observations must be [{n}, {spec.obs_dim}], got {final.shape}.")
    else:
        final = np.zeros((n, spec.obs_dim), np.float32)
    return np.asarray(_k_step_errors(spec, k, has_final, params, observations, actions, mask, final))


@partial(jax.jit, static_argnames=("spec", "k", "has_final"))
def _k_step_errors(spec: EnsembleSpec, k: int, has_final: bool, params: EnsembleParams,
                   observations: jax.Array, actions: jax.Array, mask: jax.Array,
                   final: jax.Array) -> jax.Array:
    n, t_len = mask.shape
    real = mask > 0
    targets = jnp.concatenate([observations, final[:, None]], axis=1)  # [N, T+1, obs]
    known = jnp.concatenate([real, jnp.logical_and(has_final, real[:, -1:])], axis=1)  # [N, T+1]
    starts = jnp.arange(t_len)
    members_obs = jnp.broadcast_to(observations, (spec.members, *observations.shape))

    def step(carry, j):
        state, window = carry
        a_idx = jnp.minimum(starts + j, t_len - 1)
        window = window & real[:, a_idx] & (starts + j < t_len)[None]
        state = jax.vmap(lambda p, s: next_obs(spec, p, s, actions[:, a_idx]))(params, state)
        target_idx = jnp.minimum(starts + j + 1, t_len)
        ok = window & known[:, target_idx]
        sq = jnp.where(ok[None, :, :, None], (state - targets[:, target_idx][None]) ** 2, 0.0)
        count = ok.sum() * spec.members * spec.obs_dim
        return (state, window), jnp.where(count > 0, sq.sum() / jnp.maximum(count, 1), jnp.nan)

    _, errors = jax.lax.scan(step, (members_obs, jnp.ones((n, t_len), bool)), jnp.arange(k))
    return errors
