"""The meta-learner: a composition of inner estimator, outer objective and outer optimizer.

One iteration (ProMP Alg. 1; the RL version of MAML, Finn et al. 2017, Alg. 3):

1. sample tasks; θ_0 = θ for every task;
2. for k = 0..K−1: sample D_k with θ_k, θ_{k+1} = θ_k + α⊙∇J^inner(θ_k; D_k)
   (:meth:`MetaLearner.adapt_tasks`, numeric, no graph kept; meta-testing may use another inner
   optimizer, :meth:`MetaLearner.adapt_tasks_with`);
3. sample D_K with θ_K;
4. :meth:`MetaLearner.update`: rebuild θ → θ_1 → … → θ_K differentiably on the same data and
   step the meta-parameters with the outer optimizer:

   an entry of :data:`OUTER_OPTIMIZERS`:

   * ``adam`` — ``outer_steps`` full-batch Adam steps on
     loss = −mean_i J_i + mean_k η_k·mean_i KL_k  (η = 0 except ProMP; ProMP Eq. 13, Alg. 1);
     optional adaptive η: ÷2 when KL_k < target/1.5, ×2 when KL_k > 1.5·target (the original
     ProMP code's rule, docs/algorithms.md);
   * ``trpo`` — one TRPO step on −mean_i J_i subject to mean_i KL(π_old,K ‖ π_{θ_K(θ)}) ≤ δ,
     with exact Hessian-vector products of that KL through the inner steps (``jvp``).

Meta-parameters are ``{"policy": θ}`` plus ``{"inner_lr": α}`` (a pytree like θ) when the step
size is learned. Everything in :meth:`update` is one jitted function per configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from adaptrl import memory
from adaptrl.meta.adaptation import INNER_OPTIMIZERS, adapt, adapt_step, adapt_step_with, mean_kl_from_old
from adaptrl.meta.batch import StepBatch, rollout_prefix
from adaptrl.meta.batch import step as batch_step
from adaptrl.meta.control_variates import control_variate_for
from adaptrl.meta.objectives import OuterSpec, TaskTerms, meta_terms
from adaptrl.optim.trpo import trpo_step
from adaptrl.policies import Params, init_params, make_policy
from adaptrl.registry import Registry

TrainConfig = Any
"""A :class:`adaptrl.meta.config.TrainConfig` (which validates its names against the registries
here, so this module does not import it)."""


class LearnerState(NamedTuple):
    """Everything the outer loop carries between iterations (checkpointed)."""

    meta_params: dict
    opt_state: Any
    kl_coefs: jax.Array  # [K] ProMP's η per inner step
    cv_params: Any = None  # the control variate's state (TMAML); {} without one


class OuterOptimizer(NamedTuple):
    """An outer optimizer: ``init(config, meta_params) → opt_state`` and
    ``update(learner, state, batches) → (state, info)`` (jitted by the learner)."""

    init: Callable[[Any, dict], Any]
    update: Callable[[MetaLearner, LearnerState, StepBatch], tuple[LearnerState, dict]]


OUTER_OPTIMIZERS: Registry[OuterOptimizer] = Registry("outer optimizer")


def _adam_init(config: TrainConfig, meta_params: dict) -> Any:
    return optax.adam(config.outer_lr).init(meta_params)


def adam_update(learner: MetaLearner, state: LearnerState, batches: StepBatch):
    """``outer_steps`` Adam steps on the penalised meta-loss, then ProMP's adaptive η rule."""
    config = learner.config
    optimizer = optax.adam(config.outer_lr)
    grad_fn = jax.value_and_grad(learner.loss, has_aux=True)

    def one_step(carry, _):
        meta_params, opt_state = carry
        (loss, _), grads = grad_fn(meta_params, batches, state.kl_coefs)
        updates, opt_state = optimizer.update(grads, opt_state, meta_params)
        return (optax.apply_updates(meta_params, updates), opt_state), loss

    (meta_params, opt_state), losses = jax.lax.scan(
        one_step, (state.meta_params, state.opt_state), None, length=config.outer_steps)
    loss_after, terms = learner.loss(meta_params, batches, state.kl_coefs)
    kl_coefs = state.kl_coefs
    if config.adaptive_kl and config.inner_steps:
        target = config.target_kl
        kl_coefs = jnp.where(terms.inner_kls < target / 1.5, kl_coefs / 2,
                             jnp.where(terms.inner_kls > target * 1.5, kl_coefs * 2, kl_coefs))
    info = {"LossBefore": losses[0], "LossAfter": loss_after, "MeanKL": terms.outer_kl}
    if config.inner_steps:
        info["KLInner"] = jnp.mean(terms.inner_kls)
        info["KLCoeffInner"] = jnp.mean(kl_coefs)
    return LearnerState(meta_params, opt_state, kl_coefs, state.cv_params), info


def trpo_update(learner: MetaLearner, state: LearnerState, batches: StepBatch):
    """One TRPO step on −mean_i J_i within mean_i KL(π_old,K ‖ π_θK) ≤ δ (ProMP App. C.2).

    With adaptation the KL's Hessian is applied in its Gauss-Newton form J_Uᵀ H J_U
    (:meth:`MetaLearner.outer_kl_curvature`), which equals the exact Hessian at the sampling
    parameters and needs no third derivatives of the inner objective; ``trpo_curvature=exact``
    differentiates the whole KL twice instead (forward-over-reverse). The line search evaluates
    the loss and the KL of a candidate from one adaptation (``loss_and_kl``).

    With ``cg_subsample = f < 1`` the curvature (either form) is that of the KL on the first
    ``f·R`` rollouts of every task (:func:`adaptrl.meta.batch.rollout_prefix`; the original code's
    ``ConjugateGradientOptimizer`` has such a ``subsample_factor`` but ignores it, docs/algorithms.md,
    "Outer optimizers"), so each conjugate-gradient product costs about ``f`` as much. The
    gradient and the line search's loss and KL ≤ δ check use the whole batch: the step's
    direction and scale come from the subsample's curvature, the trust region is enforced on
    the whole batch."""
    config = learner.config

    def loss_and_kl(meta_params):
        terms = learner.terms(meta_params, batches)
        return -terms.objective, terms.outer_kl

    curvature_batches = rollout_prefix(batches, config.cg_subsample)

    def curvature_kl(meta_params):  # only its Hessian is used: the line search checks loss_and_kl's
        return learner.terms(meta_params, curvature_batches).outer_kl

    gauss_newton = config.inner_steps and config.trpo_curvature == "gauss_newton"
    curvature = learner.outer_kl_curvature(state.meta_params, curvature_batches) if gauss_newton else None
    meta_params, info = trpo_step(
        lambda p: loss_and_kl(p)[0], curvature_kl, state.meta_params,
        max_kl=config.max_kl, cg_iters=config.cg_iters, damping=config.cg_damping,
        backtrack_ratio=config.backtrack_ratio, max_backtracks=config.max_backtracks,
        loss_and_kl_fn=loss_and_kl, curvature_fn=curvature)
    return LearnerState(meta_params, state.opt_state, state.kl_coefs, state.cv_params), info


OUTER_OPTIMIZERS.register("adam", OuterOptimizer(_adam_init, adam_update),
                          "outer_steps Adam steps on −J + η·KL (VPG, ProMP)")
OUTER_OPTIMIZERS.register("trpo", OuterOptimizer(lambda config, meta_params: (), trpo_update),
                          "one TRPO step; KL Hessian-vector products through adaptation in Gauss-Newton "
                          "form (trpo_curvature)")


class MetaLearner:
    """Builds the jitted adaptation and update functions of one :class:`TrainConfig`."""

    def __init__(self, config: TrainConfig, obs_dim: int, act_dim: int):
        self.config = config
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.policy = make_policy(act_dim, config.hidden_sizes, config.init_std, kind=config.policy)
        self.spec = OuterSpec(
            inner_estimator=config.inner_estimator, inner_steps=config.inner_steps,
            outer_objective=config.outer_objective, clip_eps=float(config.clip_eps),
            emaml=config.emaml, reduction=config.loss_reduction,
            control_variate=config.control_variate, cv_formula=config.cv_formula,
            inner_grad_norm=config.inner_grad_norm)
        self.control_variate = control_variate_for(config, obs_dim, act_dim)
        self.outer_optimizer = OUTER_OPTIMIZERS.get(config.optimizer)
        self._adapt_tasks = jax.jit(self._adapt_tasks_impl)
        self._adapt_tasks_with: dict[tuple[str, str], Callable] = {}
        self._update = jax.jit(lambda state, batches: self.outer_optimizer.update(self, state, batches))
        self._loss_jit = jax.jit(self.loss)
        self._meta_gradient = jax.jit(jax.grad(self._objective))
        if memory.training_check_enabled():
            self.check_training_memory()

    # ------------------------------------------------------------------------------- memory
    def batch_shape(self, *, tasks: int | None = None, rollouts: int | None = None,
                    horizon: int | None = None, inner_steps: int | None = None) -> memory.BatchShape:
        """The sizes of this configuration's batch for :mod:`adaptrl.memory` (each size defaults to
        the configuration's; a horizon of 0 is the env's)."""
        c = self.config
        params = jax.eval_shape(lambda key: init_params(self.policy, key, self.obs_dim),
                                jax.random.PRNGKey(0))
        return memory.BatchShape(
            tasks=int(c.tasks_per_iter if tasks is None else tasks),
            rollouts=int(c.rollouts_per_task if rollouts is None else rollouts),
            horizon=int(horizon or c.horizon or _env_horizon(c)), obs_dim=self.obs_dim,
            act_dim=self.act_dim, hidden_width=int(sum(c.hidden_sizes)),
            param_count=int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params))),
            inner_steps=int(c.inner_steps if inner_steps is None else inner_steps), optimizer=c.optimizer,
            control_variate=c.control_variate,
            cv_width=int(sum(c.cv_hidden_sizes)) if c.control_variate != "none" else 0,
            cv_action_samples=int(c.cv_action_samples),
            grad_stats=bool(c.grad_stats_every), env=c.env)

    def check_training_memory(self) -> None:
        """A :class:`~adaptrl.errors.ConfigError` before anything is compiled when one training
        iteration of this configuration would not fit in memory (:func:`adaptrl.memory.check_fits`)."""
        c = self.config
        shape = self.batch_shape()
        memory.check_fits(
            shape, "train", vary="tasks", label="tasks_per_iter",
            request=f"training with tasks_per_iter={shape.tasks}, rollouts_per_task={shape.rollouts} "
                    f"and horizon={shape.horizon} ({c.algo}, hidden_sizes {tuple(c.hidden_sizes)})",
            alternatives="rollouts_per_task or horizon")

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
        state = LearnerState(meta_params, self.outer_optimizer.init(self.config, meta_params),
                             jnp.full((k,), self.config.kl_coef, jnp.float32), cv_params)
        # committed to the default device, as every later state (an update's output) is: jit keys
        # its compiled programs on that, so iteration 1 would otherwise compile them all again
        return jax.device_put(state, jax.devices()[0])

    def step_size(self, meta_params: dict) -> Any:
        """α: the learned per-parameter pytree, or the configured scalar."""
        return meta_params.get("inner_lr", self.config.inner_lr)

    # ---------------------------------------------------------------------------- adaptation
    def _adapt_tasks_impl(self, meta_params: dict, task_params: Params, batch: StepBatch) -> Params:
        step_size = self.step_size(meta_params)
        return jax.vmap(lambda p, b: adapt_step(self.policy, p, step_size, b, self.spec))(task_params, batch)

    def adapt_tasks(self, meta_params: dict, task_params: Params, batch: StepBatch) -> Params:
        """θ_{k+1} per task from θ_k (leading task axis) on step k's batch, for sampling."""
        return self._adapt_tasks(meta_params, task_params, batch)

    def init_inner_optimizer(self, optimizer: str, task_params: Params) -> Any:
        """The per-task state (leading task axis) of meta-test inner optimizer ``optimizer``
        (:data:`~adaptrl.meta.adaptation.INNER_OPTIMIZERS`) at θ_0 = ``task_params``."""
        return jax.vmap(INNER_OPTIMIZERS.get(optimizer).init)(task_params)

    def adapt_tasks_with(self, optimizer: str, meta_params: dict, task_params: Params, opt_state: Any,
                         batch: StepBatch, step_size: float | None = None,
                         grad_norm: str | None = None) -> tuple[Params, Any]:
        """``(θ_{k+1}, state_{k+1})`` per task with meta-test inner optimizer ``optimizer``
        (:func:`~adaptrl.meta.adaptation.adapt_step_with`; evaluation only: nothing is
        differentiated through it). ``step_size``: a scalar α replacing the run's (``None``: the
        run's, a learned one included); ``grad_norm``: an ``inner_grad_norm`` replacing the run's.
        ``sgd`` with the run's α and normalisation is exactly :meth:`adapt_tasks`."""
        grad_norm = self.spec.inner_grad_norm if grad_norm is None else grad_norm
        if optimizer == "sgd" and step_size is None and grad_norm == self.spec.inner_grad_norm:
            return self.adapt_tasks(meta_params, task_params, batch), opt_state
        key = (optimizer, grad_norm)
        if key not in self._adapt_tasks_with:
            direction = INNER_OPTIMIZERS.get(optimizer)
            spec = self.spec._replace(inner_grad_norm=grad_norm)

            def adapt_all(alpha, params, state, step_batch):
                def one_task(p, s, b):
                    return adapt_step_with(direction, self.policy, p, s, alpha, b, spec)

                return jax.vmap(one_task)(params, state, step_batch)

            self._adapt_tasks_with[key] = jax.jit(adapt_all)
        alpha = self.step_size(meta_params) if step_size is None else float(step_size)
        return self._adapt_tasks_with[key](alpha, task_params, opt_state, batch)

    # ------------------------------------------------------------------------- meta-objective
    def terms(self, meta_params: dict, batches: StepBatch) -> TaskTerms:
        """mean_i J_i and the KLs through the inner steps (:func:`~adaptrl.meta.objectives.meta_terms`)."""
        return meta_terms(self.policy, self.spec, meta_params, batches, self.config.inner_lr)

    def loss(self, meta_params: dict, batches: StepBatch, kl_coefs: jax.Array):
        """``(−mean_i J_i + mean_k η_k·KL_k, terms)``: the penalised meta-loss (ProMP Eq. 13)."""
        terms = self.terms(meta_params, batches)
        penalty = jnp.mean(kl_coefs * terms.inner_kls) if self.config.inner_steps else 0.0
        return -terms.objective + penalty, terms

    def adapted_params(self, meta_params: dict, batches: StepBatch) -> Params:
        """U(θ): θ_K of every task (leading task axis), rebuilt differentiably on ``batches``."""
        step_size = self.step_size(meta_params)
        return jax.vmap(lambda task_batches: self._adapted_task_params(
            meta_params["policy"], step_size, task_batches), in_axes=(1,))(batches)

    def _adapted_task_params(self, policy_params: Params, step_size: Any, task_batches: StepBatch) -> Params:
        """U_i(θ) = θ_K of one task from ``policy_params`` on its ``[K+1, ...]`` step batches."""
        k = self.config.inner_steps
        steps = [batch_step(task_batches, j) for j in range(k)]
        return adapt(self.policy, policy_params, step_size, steps, self.spec)[k]

    def symmetric_adaptation(self, meta_params: dict) -> bool:
        """Whether every task's adaptation Jacobian J_Ui is symmetric, so J_Uiᵀ = J_Ui: one plain
        gradient step θ + α∇J^inner_i(θ) with a fixed scalar α (J_Ui = I + α∇²J^inner_i; the
        inner objectives' stop-gradients hold their sampling terms constant, so this is the
        Hessian of one scalar). Not with K > 1 steps (J_U is then a product of symmetric
        factors, not symmetric), a learned α (a meta-parameter too) or a normalised inner
        gradient."""
        return (self.config.inner_steps == 1 and set(meta_params) == {"policy"}
                and self.spec.inner_grad_norm == "none")

    def adaptation_products(self, meta_params: dict, batches: StepBatch
                            ) -> tuple[Params, Callable[[dict], Params], Callable[[Params], dict]]:
        """``(U(θ), v ↦ J_U v, w ↦ J_Uᵀ w)`` at ``meta_params`` with the linearisation computed once.

        J_U v gives every task's J_Ui v (leading task axis), J_Uᵀ w = Σ_i J_Uiᵀ w_i in the
        meta-parameters. With a :meth:`symmetric_adaptation` both are forward-mode products of
        one linearisation of the per-task map (θ_i)_i ↦ (U_i(θ_i))_i at θ_i = θ: J_Uᵀ w =
        Σ_i J_Ui w_i, which on CPU is several times cheaper than transposing the linearisation
        (a reverse pass through the inner gradient with a different cotangent per task);
        otherwise the transpose is used."""
        if not self.symmetric_adaptation(meta_params):
            adapted, u_jvp = jax.linearize(lambda mp: self.adapted_params(mp, batches), meta_params)
            u_transpose = jax.linear_transpose(u_jvp, meta_params)
            return adapted, u_jvp, lambda w: u_transpose(w)[0]
        num_tasks = batches.mask.shape[1]
        step_size = self.step_size(meta_params)

        def per_task_adaptation(task_params):
            return jax.vmap(lambda p, b: self._adapted_task_params(p, step_size, b),
                            in_axes=(0, 1))(task_params, batches)

        def tile(tree: Params) -> Params:
            return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (num_tasks, *x.shape)), tree)

        adapted, per_task_jvp = jax.linearize(per_task_adaptation, tile(meta_params["policy"]))

        def u_jvp(v: dict) -> Params:
            return per_task_jvp(tile(v["policy"]))

        def u_vjp(w: Params) -> dict:
            return {"policy": jax.tree_util.tree_map(lambda x: jnp.sum(x, 0), per_task_jvp(w))}

        return adapted, u_jvp, u_vjp

    def outer_kl_curvature(self, meta_params: dict, batches: StepBatch) -> Callable[[dict], dict]:
        """``v ↦ J_Uᵀ J_Dᵀ H_D J_D J_U v`` at ``meta_params``: the KL(π_old,K ‖ π_θK) constraint's
        Hessian in Gauss-Newton form through two maps, U = the adaptation θ ↦ (θ_K,i)_i
        (:meth:`adapted_params`) and D = θ_K,i ↦ the policy's distribution parameters on the
        post-update steps (for the Gaussian policies mean and log-std per step), with H_D the
        Hessian of mean_i KL_i in those distribution parameters (for a diagonal Gaussian
        elementwise: 1/σ² on the means, 2 on the log-stds, per step weight).

        The exact Hessian adds Σ (∂KL/∂θ_K)·∂²U and Σ (∂KL/∂D)·∂²D. Both vanish at the sampling
        parameters, where π_θK is the sampling distribution, so ∂KL/∂D = 0 and ∂KL/∂θ_K = 0;
        at the TRPO step's linearisation point the forms agree. Per product this costs one
        product with J_U and one with J_Uᵀ (second order, on the pre-update steps;
        :meth:`adaptation_products`, both forward-mode for a one-step adaptation) and one
        forward and one reverse pass through the policy network (first order, on the post-update
        steps), instead of the third derivatives of the exact product (``trpo_curvature=exact``)."""
        post = batch_step(batches, self.config.inner_steps)

        def post_distributions(task_params):
            return jax.vmap(lambda p, b: self.policy.distribution(p, b.observations))(task_params, post)

        def post_kl(distributions):
            per_task = jax.vmap(lambda d, b: mean_kl_from_old(self.policy, d, b))(distributions, post)
            return jnp.mean(per_task)

        adapted, u_jvp, u_vjp = self.adaptation_products(meta_params, batches)
        distributions, d_jvp = jax.linearize(post_distributions, adapted)
        d_vjp = jax.linear_transpose(d_jvp, adapted)
        _, h_jvp = jax.linearize(jax.grad(post_kl), distributions)

        def curvature(v: dict) -> dict:
            return u_vjp(d_vjp(h_jvp(d_jvp(u_jvp(v))))[0])

        return curvature

    def _objective(self, policy_params, meta_params, batches):
        return self.terms({**meta_params, "policy": policy_params}, batches).objective

    def meta_gradient(self, meta_params: dict, batches: StepBatch) -> Params:
        """∇_θ mean_i J_i: the meta-gradient estimate of the policy parameters on one iteration's
        stacked batches (the objective only — no KL penalty, no optimizer)."""
        return self._meta_gradient(meta_params["policy"], meta_params, batches)

    # -------------------------------------------------------------------------------- update
    def update(self, state: LearnerState, batches: StepBatch) -> tuple[LearnerState, dict[str, float]]:
        """One outer update on the stacked step batches ``[K+1, M, ...]``; returns the new
        state and the algorithm's log keys (floats)."""
        new_state, info = self._update(state, batches)
        return new_state, {k: float(v) for k, v in jax.device_get(info).items()}

    def evaluate(self, state: LearnerState, batches: StepBatch) -> dict[str, float]:
        """Loss and KLs at the current parameters (no update)."""
        loss, terms = self._loss_jit(state.meta_params, batches, state.kl_coefs)
        out = {"Loss": loss, "MeanKL": terms.outer_kl}
        if self.config.inner_steps:
            out["KLInner"] = jnp.mean(terms.inner_kls)
        return {k: float(v) for k, v in jax.device_get(out).items()}


def _env_horizon(config: TrainConfig) -> int:
    """The horizon a configuration without one samples with: its env option, else the family's."""
    from adaptrl.envs import family_horizon

    return int(config.env_options.get("horizon") or family_horizon(config.env))


def tree_is_finite(tree: Any) -> bool:
    """True when every leaf of ``tree`` is finite."""
    return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree_util.tree_leaves(tree))
