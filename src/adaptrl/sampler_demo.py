"""The sampler at work with a random policy (``adaptrl sample``): returns of every task, as a
CSV of every trajectory and a box plot per task."""

from __future__ import annotations

import os
from dataclasses import dataclass

import jax
import numpy as np

from adaptrl.envs import make
from adaptrl.envs.catalog import describe_tasks
from adaptrl.plots import plot_task_returns
from adaptrl.policies import init_params, make_policy, per_task
from adaptrl.sampling import Sampler

RETURNS_CSV = "returns.csv"
RETURNS_PNG = "returns.png"


@dataclass
class RandomPolicyReturns:
    """Trajectories of a freshly initialised policy: ``returns`` and ``lengths`` are ``[tasks,
    rollouts]``; ``entries[i]`` are the texts of task ``i``'s entries (keys ``task_keys``)."""

    env: str
    task_keys: list[str]
    entries: list[list[str]]
    returns: np.ndarray
    lengths: np.ndarray
    num_env_steps: int

    @property
    def labels(self) -> list[str]:
        """One text per task (its entries joined by commas)."""
        return [", ".join(entry) for entry in self.entries]


def sample_random_policy(env_name: str, *, tasks: int = 8, rollouts: int = 10, horizon: int | None = None,
                         seed: int = 0) -> RandomPolicyReturns:
    """Sample ``tasks`` tasks of ``env_name`` and ``rollouts`` trajectories per task (``horizon``
    steps; None = the family's) with the default Gaussian MLP policy freshly initialised from
    ``seed`` (which also seeds the tasks, resets and noise)."""
    env = make(env_name)
    try:
        policy = make_policy(env.spec.act_dim)
        sampler = Sampler(env, policy, rollouts, horizon)
        key_init, key_sample = jax.random.split(jax.random.PRNGKey(seed))
        task_batch = env.sample_tasks(tasks, seed)
        params = per_task(init_params(policy, key_init, env.spec.obs_dim), tasks)
        traj = sampler.collect(params, task_batch, key_sample)
        return RandomPolicyReturns(env.spec.name, list(task_batch), describe_tasks(task_batch),
                                   np.asarray(traj.returns()), np.asarray(traj.mask).sum(-1),
                                   traj.num_env_steps)
    finally:
        env.close()


def write_returns_csv(result: RandomPolicyReturns, path: str) -> str:
    """``task,rollout,return,length`` rows of every trajectory; returns ``path``."""
    with open(path, "w") as f:
        f.write("task,rollout,return,length\n")
        for i, (returns, lengths) in enumerate(zip(result.returns, result.lengths, strict=True)):
            for j, (ret, length) in enumerate(zip(returns, lengths, strict=True)):
                f.write(f"{i},{j},{ret:.6f},{int(length)}\n")
    return path


def write_returns(result: RandomPolicyReturns, out: str) -> tuple[str, str]:
    """Write ``out/returns.csv`` and the box plot ``out/returns.png``; returns both paths."""
    os.makedirs(out, exist_ok=True)
    csv_path = write_returns_csv(result, os.path.join(out, RETURNS_CSV))
    png_path = plot_task_returns(result.returns, result.labels, result.env, os.path.join(out, RETURNS_PNG))
    return csv_path, png_path
