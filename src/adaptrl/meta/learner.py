"""The meta-learner: a composition of inner estimator, outer objective and outer optimizer.

One iteration (ProMP Alg. 1, MAML Alg. 3 of the original RL-MAML; reference §2):

1. sample tasks; θ_0 = θ for every task;
2. for k = 0..K−1: sample D_k with θ_k, θ_{k+1} = θ_k + α⊙∇J^inner(θ_k; D_k)
   (:meth:`MetaLearner.adapt_tasks`, numeric, no graph kept);
3. sample D_K with θ_K;
4. :meth:`MetaLearner.update`: rebuild θ → θ_1 → … → θ_K differentiably on the same data and
   step the meta-parameters with the outer optimizer:

   * ``adam`` — ``outer_steps`` full-batch Adam steps on
     loss = −mean_i J_i + mean_k η_k·mean_i KL_k  (η = 0 except ProMP; ProMP Eq. 13, Alg. 1);
     optional adaptive η: ÷2 when KL_k < target/1.5, ×2 when KL_k > 1.5·target (reference §7.2);
   * ``trpo`` — one TRPO step on −mean_i J_i subject to mean_i KL(π_old,K ‖ π_{θ_K(θ)}) ≤ δ,
     with exact Hessian-vector products of that KL through the inner steps (``jvp``).

Meta-parameters are ``{"policy": θ}`` plus ``{"inner_lr": α}`` (a pytree like θ) when the step
size is learned. Everything in :meth:`update` is one jitted function per configuration.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from adaptrl.experiment.config import TrainConfig
from adaptrl.meta.adaptation import adapt_step
from adaptrl.meta.batch import StepBatch
from adaptrl.meta.control_variates import control_variate_for
from adaptrl.meta.objectives import OuterSpec, meta_terms
from adaptrl.optim.trpo import trpo_step
from adaptrl.policies import Params, init_params, make_policy


class LearnerState(NamedTuple):
    """Everything the outer loop carries between iterations (checkpointed)."""

    meta_params: dict
    opt_state: Any
    kl_coefs: jax.Array  # [K] ProMP's η per inner step
    cv_params: Any = None  # the control variate's parameters (TMAML); {} without one


class MetaLearner:
    """Builds the jitted adaptation and update functions of one :class:`TrainConfig`."""

    def __init__(self, config: TrainConfig, obs_dim: int, act_dim: int):
        self.config = config
        self.obs_dim = obs_dim
        self.policy = make_policy(act_dim, config.hidden_sizes, config.init_std, kind=config.policy)
        self.spec = OuterSpec(
            inner_estimator=config.inner_estimator, inner_steps=config.inner_steps,
            outer_objective=config.outer_objective, clip_eps=float(config.clip_eps),
            emaml=config.emaml, reduction=config.loss_reduction,
            control_variate=config.control_variate, cv_formula=config.cv_formula)
        self.control_variate = control_variate_for(config, obs_dim, act_dim)
        self.optimizer = optax.adam(config.outer_lr)
        self._adapt_tasks = jax.jit(self._adapt_tasks_impl)
        self._update = jax.jit(self._update_impl)
        self._terms = jax.jit(self._loss)
        self._meta_gradient = jax.jit(jax.grad(self._objective))

    # ------------------------------------------------------------------ parameters and state
    def init(self, key: jax.Array) -> LearnerState:
        """Fresh meta-parameters (Glorot MLP, log-std log(init_std)), optimizer state and η."""
        params = init_params(self.policy, key, self.obs_dim)
        meta_params: dict = {"policy": params}
        if self.config.learn_inner_lr:
            meta_params["inner_lr"] = jax.tree_util.tree_map(
                lambda p: jnp.full_like(p, self.config.inner_lr), params)
        k = self.config.inner_steps
        cv_params = {} if self.control_variate is None else \
            self.control_variate.init(jax.random.fold_in(key, 1))
        return LearnerState(meta_params, self.optimizer.init(meta_params),
                            jnp.full((k,), self.config.kl_coef, jnp.float32), cv_params)

    def step_size(self, meta_params: dict) -> Any:
        """α: the learned per-parameter pytree, or the configured scalar."""
        return meta_params.get("inner_lr", self.config.inner_lr)

    def apply(self, params: Params, obs: jax.Array):
        return self.policy.apply(params, obs)

    # ---------------------------------------------------------------------------- adaptation
    def _adapt_tasks_impl(self, meta_params: dict, task_params: Params, batch: StepBatch) -> Params:
        step_size = self.step_size(meta_params)
        one = lambda p, b: adapt_step(self.apply, p, step_size, b, kind=self.config.inner_estimator,  # noqa: E731
                                      reduction=self.config.loss_reduction,
                                      control_variate=self.spec.control_variate,
                                      cv_formula=self.spec.cv_formula)
        return jax.vmap(one)(task_params, batch)

    def adapt_tasks(self, meta_params: dict, task_params: Params, batch: StepBatch) -> Params:
        """θ_{k+1} per task from θ_k (leading task axis) on step k's batch, for sampling."""
        return self._adapt_tasks(meta_params, task_params, batch)

    # -------------------------------------------------------------------------------- update
    def _objective(self, policy_params, meta_params, batches):
        return meta_terms(self.apply, self.spec, {**meta_params, "policy": policy_params}, batches,
                          self.config.inner_lr).objective

    def meta_gradient(self, meta_params: dict, batches: StepBatch) -> Params:
        """∇_θ mean_i J_i: the meta-gradient estimate of the policy parameters on one iteration's
        stacked batches (the objective only — no KL penalty, no optimizer)."""
        return self._meta_gradient(meta_params["policy"], meta_params, batches)

    def _loss(self, meta_params, batches, kl_coefs):
        terms = meta_terms(self.apply, self.spec, meta_params, batches, self.config.inner_lr)
        penalty = jnp.mean(kl_coefs * terms.inner_kls) if self.config.inner_steps else 0.0
        return -terms.objective + penalty, terms

    def _update_impl(self, state: LearnerState, batches: StepBatch):
        if self.config.optimizer == "trpo":
            return self._trpo_update(state, batches)
        return self._adam_update(state, batches)

    def _adam_update(self, state: LearnerState, batches: StepBatch):
        grad_fn = jax.value_and_grad(self._loss, has_aux=True)

        def one_step(carry, _):
            meta_params, opt_state = carry
            (loss, _), grads = grad_fn(meta_params, batches, state.kl_coefs)
            updates, opt_state = self.optimizer.update(grads, opt_state, meta_params)
            return (optax.apply_updates(meta_params, updates), opt_state), loss

        (meta_params, opt_state), losses = jax.lax.scan(
            one_step, (state.meta_params, state.opt_state), None, length=self.config.outer_steps)
        loss_after, terms = self._loss(meta_params, batches, state.kl_coefs)
        kl_coefs = state.kl_coefs
        if self.config.adaptive_kl and self.config.inner_steps:
            target = self.config.target_kl
            kl_coefs = jnp.where(terms.inner_kls < target / 1.5, kl_coefs / 2,
                                 jnp.where(terms.inner_kls > target * 1.5, kl_coefs * 2, kl_coefs))
        info = {"LossBefore": losses[0], "LossAfter": loss_after, "MeanKL": terms.outer_kl}
        if self.config.inner_steps:
            info["KLInner"] = jnp.mean(terms.inner_kls)
            info["KLCoeffInner"] = jnp.mean(kl_coefs)
        return LearnerState(meta_params, opt_state, kl_coefs, state.cv_params), info

    def _trpo_update(self, state: LearnerState, batches: StepBatch):
        def loss_fn(meta_params):
            return -meta_terms(self.apply, self.spec, meta_params, batches, self.config.inner_lr).objective

        def kl_fn(meta_params):
            return meta_terms(self.apply, self.spec, meta_params, batches, self.config.inner_lr).outer_kl

        meta_params, info = trpo_step(
            loss_fn, kl_fn, state.meta_params, max_kl=self.config.max_kl, cg_iters=self.config.cg_iters,
            damping=self.config.cg_damping, backtrack_ratio=self.config.backtrack_ratio,
            max_backtracks=self.config.max_backtracks)
        return LearnerState(meta_params, state.opt_state, state.kl_coefs, state.cv_params), info

    def update(self, state: LearnerState, batches: StepBatch) -> tuple[LearnerState, dict[str, float]]:
        """One outer update on the stacked step batches ``[K+1, M, ...]``; returns the new
        state and the algorithm's log keys (floats)."""
        new_state, info = self._update(state, batches)
        return new_state, {k: float(v) for k, v in jax.device_get(info).items()}

    def evaluate(self, state: LearnerState, batches: StepBatch) -> dict[str, float]:
        """Loss and KLs at the current parameters (no update)."""
        loss, terms = self._terms(state.meta_params, batches, state.kl_coefs)
        out = {"Loss": loss, "MeanKL": terms.outer_kl}
        if self.config.inner_steps:
            out["KLInner"] = jnp.mean(terms.inner_kls)
        return {k: float(v) for k, v in jax.device_get(out).items()}


def tree_is_finite(tree: Any) -> bool:
    """True when every leaf of ``tree`` is finite."""
    return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree_util.tree_leaves(tree))
