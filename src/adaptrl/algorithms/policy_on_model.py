"""Policy optimisation on a learned dynamics ensemble: the one loop of ME-TRPO and MB-MPO
(Clavera 2020, thesis Alg. 2 and Alg. 3; docs/model-based.md).

One iteration:

1. **real data** — a uniform random controller first (``initial_random_steps``); afterwards
   ``real_steps_per_iter`` steps by the *collection policies* of the previous iteration: the
   adapted policies θ'_i (episode j by task j mod M — MB-MPO's tailored exploration) or θ
   itself (``real_data_policy=pre_update``), optionally with ME-TRPO's exploration noise
   (action noise σ ~ U(0, σ_max) per episode or per step around the mean, and parameter noise
   N(0, (c·|θ − θ_prev|)²) per episode);
2. **the model** — held-out error, buffer, ensemble fit (:class:`~adaptrl.algorithms.model_based.ModelBased`);
3. **the policy** — ``policy_steps_per_iter`` iterations of the *unchanged* meta-RL algorithm
   (:class:`~adaptrl.algorithms.meta_rl.MetaRL`) whose environment is the ensemble
   (:class:`~adaptrl.models.simulator.ModelVectorEnv`), each on fresh imagined batches:

   * MB-MPO: tasks = ensemble members (task i ↦ member i mod K for the whole rollout), one
     inner step, a TRPO (MB-MPO) or ProMP (MB-ProMP) outer step: max_θ (1/K) Σ_k J_k(θ + α∇J_k(θ))
     (thesis Eq. 7–8);
   * ME-TRPO: no inner step (``inner_steps=0``, so the meta-objective is TRPO's surrogate), a
     random member at every imagined step (``member_choice=step_rand``), and the updates stop by
     ensemble validation (thesis Eq. 5, :class:`ValidationStop`);

4. **the next collection policies** — θ adapted on a fresh imagined batch of the current model
   (MB-MPO), or θ (ME-TRPO); and, for the log only, ``real_eval_episodes`` real episodes of the
   pre-update policy (``PrePolicy-*``, the thesis's reported return) and of the adapted ones
   (``PostPolicy-*``), not added to the buffer and not counted as data.

The checkpointed state is the :class:`~adaptrl.algorithms.model_based.ModelBasedState` (models,
their optimizer states, buffer, start states) with :class:`PolicyState` as its ``extra``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from adaptrl.algorithms.base import IterationOutput
from adaptrl.algorithms.meta_rl import MetaRL, sample_and_adapt, task_seed
from adaptrl.algorithms.model_based import ModelBased, ModelBasedState, return_metrics, single_task
from adaptrl.analysis.statistics import eval_row
from adaptrl.envs import make
from adaptrl.envs.base import env_action
from adaptrl.errors import ConfigError
from adaptrl.meta.config import TrainConfig
from adaptrl.meta.learner import LearnerState, MetaLearner, tree_is_finite
from adaptrl.policies import ExplorationActor, Params, per_task
from adaptrl.sampling import Sampler, Trajectories

#: rows per chunk of :func:`ensemble_disagreement`
DISAGREEMENT_CHUNK = 4096


@partial(jax.jit, static_argnames="dynamics")
def ensemble_disagreement(dynamics: Any, model: Any, obs: jax.Array, act: jax.Array) -> jax.Array:
    """``[N]``: the members' disagreement on each state–action pair, ``mean_i std_k ŝ'^k_i``
    (the std over the K members' next states, averaged over state dims; thesis Fig. 11).

    One jitted program over chunks of ``DISAGREEMENT_CHUNK`` rows, so the K hidden activations of
    a chunk stay in cache: all 200,000 rows of an MB-MPO batch at once (K × 200,000 × 512
    activations, 2 GB per layer) ran memory-bound (docs/benchmarks.md)."""
    n = obs.shape[0]
    chunks = -(-n // DISAGREEMENT_CHUNK)
    pad = chunks * DISAGREEMENT_CHUNK - n

    def chunk_std(inputs):
        o, a = inputs
        return dynamics.all_next(model, o, a, jax.random.PRNGKey(0)).std(axis=0).mean(-1)

    def blocks(x):
        return jnp.pad(x, ((0, pad), (0, 0))).reshape(chunks, DISAGREEMENT_CHUNK, x.shape[-1])

    return jax.lax.map(chunk_std, (blocks(obs), blocks(act))).reshape(-1)[:n]


class PolicyState(NamedTuple):
    """The policy part of the checkpoint: the meta-learner's state, the collection policies of
    the next real batch (leading task axis) and θ before the last policy phase (for ME-TRPO's
    parameter noise)."""

    learner: LearnerState
    collect_params: Params
    previous_policy: Params


@dataclass
class ValidationStop:
    """ME-TRPO's policy validation (thesis §4.2, Eq. 5; App. A.1.3).

    Every ``every`` updates the per-member returns J_k(θ_new) are compared with those of the last
    kept policy: the check passes when ratio = (1/K) Σ_k 1[J_k(θ_new) > J_k(θ_old)] ≥ ``threshold``
    (strict ">"). A passed check keeps the policy and makes its returns the reference. The phase
    ends once ``patience`` updates have passed since the last kept policy (with every = 5 and
    patience = 25: at the fifth failed check in a row), and the kept policy is restored."""

    every: int
    patience: int
    threshold: float
    reference: np.ndarray
    kept_update: int = 0
    last_ratio: float = math.nan

    @staticmethod
    def improved_fraction(new: np.ndarray, old: np.ndarray) -> float:
        """(1/K) Σ_k 1[J_k(θ_new) > J_k(θ_old)] (thesis Eq. 5)."""
        return float(np.mean(np.asarray(new) > np.asarray(old)))

    def due(self, update: int) -> bool:
        """Whether a check is made after update number ``update`` (1-based)."""
        return update % self.every == 0

    def check(self, update: int, returns: np.ndarray) -> bool:
        """Check after update ``update``; True (keep this policy) when it passes."""
        self.last_ratio = self.improved_fraction(returns, self.reference)
        if self.last_ratio >= self.threshold:
            self.reference, self.kept_update = np.asarray(returns), update
            return True
        return False

    def exhausted(self, update: int) -> bool:
        """Whether the phase ends after update ``update``."""
        return update - self.kept_update >= self.patience


def weight_noise(params: Params, previous: Params, scale: float, key: jax.Array, n: int) -> Params:
    """``n`` draws (leading axis) of ME-TRPO's parameter noise (thesis App. A.1.3): for the weights
    and biases N(0, (scale·|params − previous|)²) elementwise, zero for the log-std."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    prev = jax.tree_util.tree_leaves(previous)
    keys = jax.random.split(key, len(flat))
    noise = []
    for (path, leaf), old, k in zip(flat, prev, keys, strict=True):
        shape = (n, *jnp.shape(leaf))
        if "log_std" in jax.tree_util.keystr(path) or scale == 0:
            noise.append(jnp.zeros(shape, jnp.result_type(leaf)))
        else:
            noise.append(scale * jnp.abs(leaf - old) * jax.random.normal(k, shape, jnp.result_type(leaf)))
    return jax.tree_util.tree_unflatten(treedef, noise)


def episode_params(collect_params: Params, n: int) -> Params:
    """Per-episode parameters: episode j gets collection policy j mod M."""
    m = jax.tree_util.tree_leaves(collect_params)[0].shape[0]
    rows = jnp.arange(n) % m
    return jax.tree_util.tree_map(lambda x: x[rows], collect_params)


def reported_return(config: Mapping[str, Any]) -> str:
    """The real return the thesis reports for ME-TRPO and MB-MPO: the (pre-update) policy's own
    episodes (``PrePolicy-AverageReturn``, thesis §5.5); ``AverageReturn`` of the collected data
    when no logging-only episodes are run (``real_eval_episodes = 0``)."""
    return "PrePolicy-AverageReturn" if config.get("real_eval_episodes", 0) else "AverageReturn"


class PolicyOnModel:
    """ME-TRPO / MB-MPO of one configuration (module docstring), an
    :class:`~adaptrl.algorithms.base.Algorithm`. ``dynamics`` replaces the learned ensemble in
    imagination (e.g. :class:`~adaptrl.models.simulator.TrueDynamics`, a perfect model)."""

    def __init__(self, config: TrainConfig, dynamics: Any = None):
        self.config = c = config
        if c.inner_steps and c.tasks_per_iter % c.model_members:
            raise ConfigError(f"tasks_per_iter ({c.tasks_per_iter}) must be a multiple of model_members "
                              f"({c.model_members}): the tasks are the ensemble members (task i ↦ member "
                              "i mod K), each the same number of times.")
        self.env = make(c.env, **c.env_options)
        self.mb = ModelBased(c, self.env)
        if dynamics is not None:
            self.mb.dynamics = dynamics
        spec = self.env.spec
        self.imagined = self.mb.model_simulator()
        learner = MetaLearner(c, spec.obs_dim, spec.act_dim)
        self.meta = MetaRL(c, self.imagined, Sampler(self.imagined, learner.policy, c.rollouts_per_task,
                                                     c.horizon), learner)
        self.policy = learner.policy
        self.collector = Sampler(self.env, self._collection_actor(), 1, c.horizon)
        self.real_sampler = Sampler(self.env, self.policy, 1, c.horizon)
        deterministic = ExplorationActor(self.policy, 0.0)
        if c.policy_validation in ("ensemble", "one_model"):
            validation_env = self.mb.model_simulator("task")
        elif c.policy_validation == "model_mean":
            validation_env = self.mb.model_simulator("mean")
        else:
            validation_env = self.env
        self.validation_sampler = (Sampler(validation_env, deterministic, c.validation_rollouts, c.horizon)
                                   if c.policy_validation != "none" else None)
        self.adapts = c.inner_steps > 0
        if not c.real_eval_episodes:
            self.curve = {"real return of the collected data": "AverageReturn"}
            self.headline = {"return": "AverageReturn"}
        elif self.adapts:
            self.headline = {"pre": "PrePolicy-AverageReturn", "post": "PostPolicy-AverageReturn"}
            self.curve = {"real return, pre-update policy": "PrePolicy-AverageReturn",
                          "real return, adapted policies": "PostPolicy-AverageReturn"}
        else:
            self.headline = {"return": "PrePolicy-AverageReturn", "updates": "PolicyUpdates"}
            self.curve = {"real return": "PrePolicy-AverageReturn"}

    def _collection_actor(self):
        c = self.config
        if c.exploration_noise == "none":
            return self.policy
        return ExplorationActor(self.policy, c.exploration_std, c.exploration_noise)

    def close(self) -> None:
        self.env.close()

    # ----------------------------------------------------------------- the Algorithm protocol
    def init(self, key: jax.Array) -> ModelBasedState:
        learner = self.meta.init(jax.random.fold_in(key, 1))
        theta = learner.meta_params["policy"]
        return self.mb.init(key, PolicyState(learner, per_task(theta, self._collection_tasks()), theta))

    def _collection_tasks(self) -> int:
        c = self.config
        return c.tasks_per_iter if self.adapts and c.real_data_policy == "adapted" else 1

    def iteration(self, state: ModelBasedState, itr: int, key: jax.Array) -> IterationOutput:
        c = self.config
        collect_key, fit_key, sim_key, improve_key, adapt_key, eval_key = jax.random.split(key, 6)
        row: dict[str, float] = {}
        start = time.perf_counter()
        if itr == 0:
            traj, _ = self.mb.collect(self.mb.random_controller(), c.initial_random_steps, collect_key)
        else:
            traj = self.collect(state.extra, c.real_steps_per_iter, collect_key)
        row["Time-RealSampling"] = time.perf_counter() - start
        row.update(return_metrics(traj))
        state, model_metrics = self.mb.absorb(state, traj, itr, fit_key)
        row.update(model_metrics)
        sim_params = self.mb.sim_params(state, sim_key)
        policy = state.extra
        theta_before = policy.learner.meta_params["policy"]
        learner, improve_metrics = self.improve(policy.learner, sim_params, improve_key)
        row.update(improve_metrics)
        start = time.perf_counter()
        adapted, member_metrics = (self.adapted_policies(learner, sim_params, state, adapt_key)
                                   if self.adapts else (None, {}))
        row["Time-Adaptation"] = time.perf_counter() - start
        row.update(member_metrics)
        state = state._replace(extra=PolicyState(learner, self.collection_params(learner, adapted),
                                                 theta_before))
        start = time.perf_counter()
        row.update(self.real_performance(learner, adapted, eval_key))
        row["Time-RealEval"] = time.perf_counter() - start
        return IterationOutput(state, row, traj.num_env_steps)

    # ------------------------------------------------------------------------- real data
    def collect(self, policy: PolicyState, steps: int, key: jax.Array) -> Trajectories:
        """Whole real episodes covering ``steps`` steps by the collection policies, with the
        configured exploration noise (module docstring)."""
        c = self.config
        n = max(1, math.ceil(steps / c.horizon))
        params = episode_params(policy.collect_params, n)
        if c.param_noise_scale > 0:
            noise = weight_noise(policy.learner.meta_params["policy"], policy.previous_policy,
                                 c.param_noise_scale, jax.random.fold_in(key, 3), n)
            params = jax.tree_util.tree_map(jnp.add, params, noise)
        return self.collector.collect(params, single_task(self.env, n), key)

    def real_performance(self, learner: LearnerState, adapted: Params | None, key: jax.Array
                         ) -> dict[str, float]:
        """``PrePolicy-*`` (θ) and, with adaptation, ``PostPolicy-*`` (the adapted policies
        ``adapted``, whichever policies collect the data) over ``real_eval_episodes`` real
        episodes each: logging only."""
        n = self.config.real_eval_episodes
        if not n:
            return {}
        tasks = single_task(self.env, n)
        pre = self.real_sampler.collect(per_task(learner.meta_params["policy"], n), tasks, key)
        out = return_metrics(pre, "PrePolicy-")
        out["RealEvalSteps"] = float(pre.num_env_steps)
        if adapted is not None:
            post = self.real_sampler.collect(episode_params(adapted, n), tasks,
                                             jax.random.fold_in(key, 1))
            out.update(return_metrics(post, "PostPolicy-"))
            out["RealEvalSteps"] += post.num_env_steps
        return out

    # ------------------------------------------------------------------------ the policy
    def imagined_tasks(self, key: jax.Array) -> dict:
        return self.imagined.sample_tasks(self.config.tasks_per_iter, seed=task_seed(key))

    def improve(self, learner: LearnerState, sim_params: Any, key: jax.Array
                ) -> tuple[LearnerState, dict[str, float]]:
        """The policy phase: meta-RL iterations on the model until the count or the validation
        rule ends it (module docstring)."""
        c = self.config
        if c.reset_policy_std:
            learner = self.reset_std(learner)
        stop = None
        timings = {"Time-Validation": 0.0}
        if self.validation_sampler is not None:
            start = time.perf_counter()
            stop = ValidationStop(c.validation_every, c.validation_patience, c.validation_threshold,
                                  self.validation_returns(learner, sim_params))
            timings["Time-Validation"] += time.perf_counter() - start
        kept, rows, updates = learner, [], 0
        for update in range(1, c.policy_steps_per_iter + 1):
            out = self.meta.iteration(learner, update, jax.random.fold_in(key, update), sim_params=sim_params)
            learner, updates = out.state, update
            rows.append(out.metrics)
            if stop is None:
                continue
            if stop.due(update):
                start = time.perf_counter()
                if stop.check(update, self.validation_returns(learner, sim_params)):
                    kept = learner
                timings["Time-Validation"] += time.perf_counter() - start
            if stop.exhausted(update):
                break
        metrics = self.phase_metrics(rows, timings)
        metrics["PolicyUpdates"] = float(updates)
        if stop is not None:
            learner = kept
            metrics["PolicyUpdatesKept"] = float(stop.kept_update)
            metrics["Validation-ImprovedFraction"] = stop.last_ratio
        return learner, metrics

    def phase_metrics(self, rows: list[dict[str, float]], timings: dict[str, float]) -> dict[str, float]:
        """The phase's imagined returns (first and last update), mean losses/KLs and summed times."""
        out: dict[str, float] = {}
        for key in rows[-1]:
            if key.startswith("Step_") and key.endswith("AverageReturn"):
                out[f"Imagined-{key}"] = rows[-1][key]
                out[f"Imagined-First-{key}"] = rows[0][key]
            elif key in ("LossBefore", "LossAfter", "MeanKL", "KLInner"):
                out[key] = float(np.mean([r[key] for r in rows]))
        for key in ("Time-Sampling", "Time-SampleProc", "Time-InnerStep", "Time-OuterStep"):
            name = key.replace("Time-Sampling", "Time-ImaginedSampling")
            out[name] = float(sum(r.get(key, 0.0) for r in rows))
        out.update(timings)
        return out

    def reset_std(self, learner: LearnerState) -> LearnerState:
        """log σ ← log(init_std) and a fresh outer-optimizer state (ME-TRPO's ``trpo.reset``)."""
        value = math.log(self.config.init_std)

        def reset(path, leaf):
            return jnp.full_like(leaf, value) if "log_std" in jax.tree_util.keystr(path) else leaf

        meta_params = dict(learner.meta_params)
        meta_params["policy"] = jax.tree_util.tree_map_with_path(reset, meta_params["policy"])
        opt_state = self.meta.learner.outer_optimizer.init(self.config, meta_params)
        return learner._replace(meta_params=meta_params, opt_state=opt_state)

    def validation_returns(self, learner: LearnerState, sim_params: Any) -> np.ndarray:
        """J_k: the deterministic (mean-action) return of θ from ``validation_rollouts`` fixed
        start states, one per member k for the whole horizon (``ensemble``), member 0
        (``one_model``), the mean model (``model_mean``) or the real env (``real_oracle``)."""
        c = self.config
        kind = c.policy_validation
        n = c.model_members if kind == "ensemble" else 1
        sampler = self.validation_sampler
        theta = per_task(learner.meta_params["policy"], n)
        key = jax.random.PRNGKey(c.seed + 12_345)  # fixed start states for every check
        if kind == "real_oracle":
            traj = sampler.collect(theta, single_task(self.env, n), key)
        else:
            tasks = self.imagined.sample_tasks(n, seed=0)  # task k ↦ member k
            traj = sampler.collect(theta, tasks, key, sim_params=sim_params)
        return np.asarray(traj.returns()).mean(axis=1)

    def collection_params(self, learner: LearnerState, adapted: Params | None) -> Params:
        """The policies that collect the next real batch: the adapted ones (``adapted``, from
        :meth:`adapted_policies`) with ``real_data_policy=adapted``, else θ (one task)."""
        if adapted is None or self.config.real_data_policy == "pre_update":
            return per_task(learner.meta_params["policy"], 1)
        return adapted

    def adapted_policies(self, learner: LearnerState, sim_params: Any, state: ModelBasedState,
                         key: jax.Array) -> tuple[Params, dict[str, float]]:
        """θ adapted on a fresh imagined batch per task (task i ↦ member i mod K), with the
        per-member inner KL(π_θ ‖ π_θ'_k) and the ensemble's disagreement on member k's imagined
        states (``Member_k-InnerKL``, ``Member_k-EnsembleStd``: thesis Fig. 11)."""
        tasks = self.imagined_tasks(key)
        result = sample_and_adapt(self.meta, learner.meta_params, tasks, jax.random.fold_in(key, 1),
                                  self.config.inner_steps, sim_params=sim_params, sample_final=False)
        return result.task_params, self.member_metrics(result.batches[0], result.task_params,
                                                       tasks["member"], state)

    def member_metrics(self, batch: Any, adapted: Params, members: np.ndarray, state: ModelBasedState
                       ) -> dict[str, float]:
        spec = self.env.spec
        mask = np.asarray(batch.mask)
        new = jax.vmap(self.policy.distribution)(adapted, batch.observations)
        kl = np.asarray(self.policy.kl(batch.dist_old, new))  # [M, R, T]
        per_task_kl = (kl * mask).sum(axis=(1, 2)) / np.maximum(mask.sum(axis=(1, 2)), 1)
        obs = np.asarray(batch.observations)
        act = env_action(np.asarray(batch.actions), spec.action_low, spec.action_high, spec.normalize_actions)
        flat_obs, flat_act = obs.reshape(-1, obs.shape[-1]), act.reshape(-1, act.shape[-1])
        disagreement = np.asarray(ensemble_disagreement(self.mb.dynamics, state.model.params, flat_obs,
                                                        flat_act)).reshape(mask.shape)
        per_task_std = (disagreement * mask).sum(axis=(1, 2)) / np.maximum(mask.sum(axis=(1, 2)), 1)
        out = {}
        for k in range(self.config.model_members):
            mine = np.asarray(members) == k
            out[f"Member_{k}-InnerKL"] = float(per_task_kl[mine].mean()) if mine.any() else math.nan
            out[f"Member_{k}-EnsembleStd"] = float(per_task_std[mine].mean()) if mine.any() else math.nan
        return out

    # ------------------------------------------------------------------------ the rest
    def non_finite(self, state: ModelBasedState, metrics: Mapping[str, float]) -> str | None:
        keys = ("Model-TrainLoss", "Model-ValidLoss", "LossBefore", "LossAfter")
        bad = [k for k in keys if not math.isfinite(metrics.get(k, 0.0))]
        if bad:
            return f"non-finite {', '.join(bad)}"
        if not tree_is_finite(state.model.params):
            return "non-finite model parameters"
        return None if tree_is_finite(state.extra.learner.meta_params) else "non-finite policy parameters"

    def write_outputs(self, run_dir: Path, state: ModelBasedState) -> list[Path]:
        return []

    def evaluate(self, state: ModelBasedState, *, tasks: int = 10, adapt_steps: int | None = None,
                 rollouts: int | None = None, seed: int = 0) -> dict[str, Any]:
        """``tasks`` real episodes of the pre-update policy θ (step 0) and, with adaptation, of the
        policies adapted on the current model (step 1; ``adapt_steps`` and ``rollouts`` are fixed
        by the configuration); mean returns with 95 % intervals across episodes."""
        if tasks < 1:
            raise ConfigError(f"--tasks must be ≥ 1, got {tasks}.")
        learner = state.extra.learner
        key = jax.random.PRNGKey(seed)
        n_tasks = single_task(self.env, tasks)
        theta = per_task(learner.meta_params["policy"], tasks)
        trajectories = [self.real_sampler.collect(theta, n_tasks, key)]
        if self.adapts and adapt_steps != 0:
            sim_params = self.mb.sim_params(state, jax.random.fold_in(key, 1))
            adapted, _ = self.adapted_policies(learner, sim_params, state, jax.random.fold_in(key, 2))
            trajectories.append(self.real_sampler.collect(episode_params(adapted, tasks), n_tasks,
                                                          jax.random.fold_in(key, 4)))
        rows = [eval_row(step, np.asarray(traj.returns())) for step, traj in enumerate(trajectories)]
        return {"adapt_steps": len(trajectories) - 1, "tasks": tasks, "seed": seed, "rollouts": 1,
                "rows": rows, "result": trajectories}
