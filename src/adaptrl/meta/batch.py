"""One adaptation step's processed data: trajectories → advantages and DiCE rewards, per task.

Processing follows the original ProMP code's ``MetaSampleProcessor`` (docs/algorithms.md, "Sample
processing"): per task, discounted returns, a baseline refit on that task's batch, GAE, advantages
standardised per task; and for the DiCE objectives the ``DiceSampleProcessor`` rewards (same
section): γ^t·r_t minus a linear time baseline fitted to them, standardised. Statistics use real
steps only (the original counted the padded zeros in DiCE's normalisation — docs/algorithms.md,
deviation 3 — which we do not reproduce).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from adaptrl import processing
from adaptrl.estimators import discount_weights
from adaptrl.sampling import Trajectories


class StepBatch(NamedTuple):
    """Processed data of one sampling step for all tasks: leaves ``[M, R, T, ...]``; a stack of
    the K+1 steps of an iteration has a leading step axis ``[K+1, M, ...]``."""

    observations: jax.Array  # [M, R, T, obs]
    actions: jax.Array  # [M, R, T, act]
    mask: jax.Array  # [M, R, T]
    rewards: jax.Array  # [M, R, T] undiscounted, 0 on padding
    advantages: jax.Array  # [M, R, T] GAE, standardised per task if configured
    dice_rewards: jax.Array  # [M, R, T] γ^t r_t − b(t), standardised (DiCE objectives)
    logp_old: jax.Array  # [M, R, T] log-density under the sampling policy
    dist_old: Any  # the sampling distribution's parameters (pytree, leaves [M, R, T, ...])
    reward_z: jax.Array  # [M] task mean of rewards standardised across tasks (E-MAML's R̂')
    cv_baselines: jax.Array  # [M, R, T] (or [M, R, T, A] action-dependent) TMAML control variate b


def _task_processing(observations, rewards, mask, *, gamma, lam, baseline, normalize):
    returns = processing.discounted_returns(rewards, mask, gamma)
    values = processing.BASELINES.get(baseline)(observations, returns, mask)
    advantages = processing.gae(rewards, values, mask, gamma=gamma, lam=lam)
    if normalize:
        advantages = processing.normalize_advantages(advantages, mask)
    folded = rewards * discount_weights(rewards.shape[-1], gamma, rewards.dtype) * mask
    time_baseline = processing.linear_time_baseline(observations, folded, mask)
    dice_rewards = (folded - time_baseline) * mask
    if normalize:
        dice_rewards = processing.normalize_advantages(dice_rewards, mask)
    return advantages, dice_rewards


@partial(jax.jit, static_argnames=("gamma", "lam", "baseline", "normalize"))
def _process(observations, rewards, mask, *, gamma, lam, baseline, normalize):
    per_task = partial(_task_processing, gamma=gamma, lam=lam, baseline=baseline, normalize=normalize)
    advantages, dice_rewards = jax.vmap(per_task)(observations, rewards, mask)
    z = processing.standardize_rewards_across_tasks(rewards, mask)
    reward_z = jnp.sum(z, axis=(1, 2)) / jnp.maximum(jnp.sum(mask, axis=(1, 2)), 1.0)
    return advantages, dice_rewards, reward_z


def process_trajectories(traj: Trajectories, *, gamma: float, lam: float, baseline: str,
                         normalize: bool) -> StepBatch:
    """Turn a sampler batch ``[M, R, T, ...]`` into a :class:`StepBatch` (one jitted call)."""
    observations = jnp.asarray(traj.observations)
    rewards = jnp.asarray(traj.rewards) * jnp.asarray(traj.mask)
    mask = jnp.asarray(traj.mask)
    advantages, dice_rewards, reward_z = _process(
        observations, rewards, mask, gamma=float(gamma), lam=float(lam), baseline=baseline,
        normalize=bool(normalize))
    return StepBatch(
        observations=observations,
        actions=jnp.asarray(traj.actions),
        mask=mask,
        rewards=rewards,
        advantages=advantages,
        dice_rewards=dice_rewards,
        logp_old=jnp.asarray(traj.log_probs),
        dist_old=jax.tree_util.tree_map(jnp.asarray, traj.dist),
        reward_z=reward_z,
        cv_baselines=jnp.zeros_like(mask),
    )


def stack_steps(batches: list[StepBatch]) -> StepBatch:
    """Stack the K+1 step batches of an iteration along a new leading step axis."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *batches)


def step(batches: StepBatch, k: int) -> StepBatch:
    """Step ``k`` of a stacked batch."""
    return jax.tree_util.tree_map(lambda x: x[k], batches)


def rollout_prefix(batches: StepBatch, fraction: float) -> StepBatch:
    """The first ``max(1, round(fraction · R))`` rollouts of every task of a stacked batch
    ``[K+1, M, R, T, ...]`` (``reward_z [K+1, M]`` has no rollout axis and is kept whole).

    A task's rollouts are independent draws from the same start-state distribution and policy,
    so a prefix is a uniform subsample of them; the TRPO step computes its curvature on one
    (``cg_subsample``)."""
    rollouts = batches.mask.shape[2]
    keep = max(1, round(fraction * rollouts))
    if keep >= rollouts:
        return batches
    return jax.tree_util.tree_map(lambda x: x[:, :, :keep] if x.ndim >= 4 else x, batches)


def return_stats(traj: Trajectories, prefix: str) -> dict[str, float]:
    """The original's per-step statistics (docs/algorithms.md, "Logged keys"), keys prefixed ``Step_k-``."""
    returns = np.asarray(traj.returns(), dtype=np.float64).ravel()
    mask = np.asarray(traj.mask)
    steps = max(mask.sum(), 1.0)
    stats = {
        f"{prefix}AverageReturn": float(returns.mean()),
        f"{prefix}StdReturn": float(returns.std()),
        f"{prefix}MaxReturn": float(returns.max()),
        f"{prefix}MinReturn": float(returns.min()),
        f"{prefix}NumTrajs": float(returns.size),
    }
    log_std = getattr(traj.dist, "log_std", None)
    if log_std is not None:  # Gaussian policies: the original's AveragePolicyStd
        log_std = np.asarray(log_std)
        stats[f"{prefix}AveragePolicyStd"] = float((np.exp(log_std) * mask[..., None]).sum()
                                                   / (steps * log_std.shape[-1]))
    return stats
