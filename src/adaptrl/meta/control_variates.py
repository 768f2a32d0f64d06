"""TMAML control variates: learning b(s_t, T_i) and attaching it to the step batches.

TMAML (Liu et al., 2019, §4.2) adds a control-variate surrogate to DiCE in the inner and the
outer objective (:func:`adaptrl.estimators.tmaml_cv`, Alg. 2). The control variate b must not
depend on a_t (TMAML §4.2, Thm. 1); this module learns it from the sampled data. Two kinds:

* ``meta`` — meta control variates (Alg. 1, loss Eq. 12): one value network V_φ shared by all
  tasks and made task-specific by one MAML step. For each task the trajectories are split in two
  halves A and B;

      φ¹ = φ − α'∇L(φ; A),   φ² = φ − α'∇L(φ; B),
      φ  ← φ − β'·mean_i [∇_φ L(φ¹; B) + ∇_φ L(φ²; A)],

  (``cv_optimizer="sgd"``, as printed; ``"adam"`` takes the same meta-gradient through Adam with
  rate β', which fits the control variate in far fewer batches — see docs/algorithms.md),

  with L(φ; D) the mean over D's real steps of (V_φ(s_t) − Ψ_t)² (Eq. 12 with r_{t'} for its
  printed r_t, docs/algorithms.md deviation 10; a mean rather than a sum so α', β' = 0.01 are
  usable for any batch size). Halves alternate between first/second and even/odd trajectories
  over the ``cv_steps`` repetitions ("swap", Alg. 1 line 7).
  The baseline used on half A comes from φ² (adapted on B) and vice versa, so no rollout adapts
  the control variate it is evaluated with (Tucker et al., 2018).

* ``task`` — per-task action-dependent control variates (Eq. 11): for each task a
  Q-network Q_ψ(s, a) fitted from scratch (Adam, rate β', ``cv_steps`` steps) on one half of the
  task's trajectories and used on the other half; per action coordinate i,

      b^i(s_t, a_t^{−i}) = E_{a^i ∼ π^i(·|s_t)} Q_ψ(s_t, (a_t^{−i}, a^i)),

  estimated with ``cv_action_samples`` samples of a^i (the same samples for every coordinate).
  Nothing is shared across tasks, as in the paper.

Targets. The DiCE objectives of this library act on processed DiCE rewards r̃_t (γ^t r_t minus a
linear time baseline, standardised per task, :mod:`adaptrl.meta.batch`), so the control variate
estimates their reward-to-go Ψ̃_t = Σ_{t'≥t} r̃_{t'}; its input is (s_t, t/T) — b may depend on the
state and the time step, never on a_t. Everything here is one jitted function per configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from adaptrl import estimators as est
from adaptrl.meta.batch import StepBatch
from adaptrl.policies import Params


class ValueMLP(nn.Module):
    """tanh MLP → one scalar per input row (the control variate's network)."""

    hidden_sizes: Sequence[int] = (64, 64)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, size in enumerate(self.hidden_sizes):
            x = nn.tanh(nn.Dense(size, name=f"hidden_{i}")(x))
        return nn.Dense(1, kernel_init=nn.initializers.zeros, name="output")(x)[..., 0]


def state_features(observations: jax.Array) -> jax.Array:
    """(s_t, t/T): the control variate's input, ``[..., T, obs + 1]``."""
    horizon = observations.shape[-2]
    time = jnp.arange(horizon, dtype=observations.dtype) / horizon
    time = jnp.broadcast_to(time[:, None], (*observations.shape[:-1], 1))
    return jnp.concatenate([observations, time], axis=-1)


def masked_mse(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over real steps of (pred − target)² (TMAML Eq. 12, with a mean instead of a sum)."""
    return jnp.sum(mask * (pred - target) ** 2) / jnp.maximum(jnp.sum(mask), 1.0)


def halves(x: jax.Array, interleaved: bool) -> tuple[jax.Array, jax.Array]:
    """Split the trajectory axis (axis 0) in two halves: first/second or even/odd."""
    if interleaved:
        return x[0::2], x[1::2]
    n = x.shape[0] // 2
    return x[:n], x[n:2 * n]


def merge_halves(a: jax.Array, b: jax.Array, n: int, interleaved: bool) -> jax.Array:
    """Inverse of :func:`halves` for ``n`` trajectories; a leftover odd trajectory gets 0."""
    if interleaved:
        out = jnp.zeros((n, *a.shape[1:]), a.dtype)
        return out.at[0::2].set(a).at[1::2].set(b)
    out = jnp.zeros((n, *a.shape[1:]), a.dtype)
    return out.at[: a.shape[0]].set(a).at[a.shape[0]: a.shape[0] + b.shape[0]].set(b)


# ------------------------------------------------------------------------ meta control variates
def meta_cv_task_loss(value_fn, phi: Params, features: jax.Array, targets: jax.Array, mask: jax.Array,
                      inner_lr: float, interleaved: bool) -> jax.Array:
    """L(φ¹; B) + L(φ²; A) of one task (Alg. 1 lines 1–5), differentiable in φ (second order)."""
    (fa, fb), (ya, yb), (ma, mb) = (halves(x, interleaved) for x in (features, targets, mask))

    def loss(p, f, y, m):
        return masked_mse(value_fn(p, f), y, m)

    phi1 = jax.tree_util.tree_map(lambda p, g: p - inner_lr * g, phi, jax.grad(loss)(phi, fa, ya, ma))
    phi2 = jax.tree_util.tree_map(lambda p, g: p - inner_lr * g, phi, jax.grad(loss)(phi, fb, yb, mb))
    return loss(phi1, fb, yb, mb) + loss(phi2, fa, ya, ma)


def meta_cv_values(value_fn, phi: Params, features: jax.Array, targets: jax.Array, mask: jax.Array,
                   inner_lr: float) -> jax.Array:
    """Cross-fitted b of one task ``[R, T]``: half B from φ adapted on A, half A from φ adapted on B."""
    (fa, fb), (ya, yb), (ma, mb) = (halves(x, False) for x in (features, targets, mask))

    def adapted(f, y, m):
        grads = jax.grad(lambda p: masked_mse(value_fn(p, f), y, m))(phi)
        return jax.tree_util.tree_map(lambda p, g: p - inner_lr * g, phi, grads)

    values_b = value_fn(adapted(fa, ya, ma), fb)
    values_a = value_fn(adapted(fb, yb, mb), fa)
    return merge_halves(values_a, values_b, features.shape[0], False) * mask


# -------------------------------------------------------------------- per-task control variates
def fit_regression(fn, params0: Params, inputs: jax.Array, targets: jax.Array, mask: jax.Array,
                   lr: float, steps: int) -> Params:
    """``steps`` Adam steps of ``fn(params, inputs)`` on the masked mean squared error to
    ``targets``, from ``params0``."""
    opt = optax.adam(lr)

    def step(carry, _):
        p, state = carry
        grads = jax.grad(lambda q: masked_mse(fn(q, inputs), targets, mask))(p)
        updates, state = opt.update(grads, state, p)
        return (optax.apply_updates(p, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params0, opt.init(params0)), None, length=steps)
    return params


def fit_q(q_fn, psi0: Params, features: jax.Array, actions: jax.Array, targets: jax.Array,
          mask: jax.Array, lr: float, steps: int) -> Params:
    """``steps`` Adam steps of Q_ψ(s, a) on the mean squared error to Ψ̃ (from ``psi0``)."""
    return fit_regression(q_fn, psi0, jnp.concatenate([features, actions], axis=-1), targets, mask,
                          lr, steps)


def action_dependent_baselines(q_fn, psi: Params, features: jax.Array, actions: jax.Array,
                               means: jax.Array, log_stds: jax.Array, noise: jax.Array) -> jax.Array:
    """b^i(s_t, a_t^{−i}) = mean_j Q_ψ(s_t, a_t with coordinate i replaced by μ_i + σ_i·ε_j).

    ``noise`` ``[S]`` are standard-normal draws ε_j (shared by all coordinates and steps);
    returns ``[..., A]``. Independent of a^i_t by construction (TMAML Eq. 11)."""
    act_dim = actions.shape[-1]
    eye = jnp.eye(act_dim, dtype=actions.dtype)

    def for_coordinate(i_onehot):
        def for_sample(eps):
            replaced = means + jnp.exp(log_stds) * eps
            a = actions * (1 - i_onehot) + replaced * i_onehot
            return q_fn(psi, jnp.concatenate([features, a], axis=-1))
        return jnp.mean(jax.vmap(for_sample)(noise), axis=0)

    return jnp.stack([for_coordinate(eye[i]) for i in range(act_dim)], axis=-1)


def task_cv_values(q_fn, psi0: Params, batch: StepBatch, targets: jax.Array, noise: jax.Array,
                   lr: float, steps: int) -> jax.Array:
    """Cross-fitted action-dependent baselines of one task ``[R, T, A]``."""
    features = state_features(batch.observations)
    parts = [halves(x, False) for x in (features, batch.actions, targets, batch.mask, batch.dist_old.mean,
                                        batch.dist_old.log_std)]
    (fa, fb), (aa, ab), (ya, yb), (ma, mb), (mua, mub), (lsa, lsb) = parts
    psi_a = fit_q(q_fn, psi0, fa, aa, ya, ma, lr, steps)
    psi_b = fit_q(q_fn, psi0, fb, ab, yb, mb, lr, steps)
    values_b = action_dependent_baselines(q_fn, psi_a, fb, ab, mub, lsb, noise)
    values_a = action_dependent_baselines(q_fn, psi_b, fa, aa, mua, lsa, noise)
    return merge_halves(values_a, values_b, features.shape[0], False) * batch.mask[..., None]


# ---------------------------------------------------------------------------------- the learner
CONTROL_VARIATE_KINDS = ("none", "meta", "task")
"""``control_variate`` settings: none, meta (TMAML Alg. 1) or task (action-dependent, Eq. 11)."""

CV_OPTIMIZERS = {"sgd": optax.sgd, "adam": optax.adam}
"""The meta control variate's update with rate β': ``sgd`` (TMAML Alg. 1 as printed) or ``adam``."""

class CVState(NamedTuple):
    """The control variate's persistent state: network parameters and optimizer state."""

    params: Params
    opt_state: Any


def explained_variance(baselines: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    """1 − Σ(Ψ̃ − b)² / Σ(Ψ̃ − mean Ψ̃)² over real steps: 1 is a perfect control variate, 0 is
    no better than a constant, < 0 is worse."""
    n = jnp.maximum(jnp.sum(mask), 1.0)
    mean = jnp.sum(mask * targets) / n
    total = jnp.sum(mask * (targets - mean) ** 2)
    return 1.0 - jnp.sum(mask * (targets - baselines) ** 2) / jnp.maximum(total, 1e-12)


class ControlVariate:
    """Learns the control variate of one configuration and fills ``StepBatch.cv_baselines``.

    ``kind``: ``meta`` (state: φ and its optimizer state, persistent across iterations and
    checkpointed) or ``task`` (state: the initialisation ψ₀ the per-task Q-networks start from,
    fixed). ``optimizer`` is the meta control variate's outer update (``sgd``: Alg. 1 as printed,
    ``adam``); the per-task fit always uses Adam."""

    def __init__(self, kind: str, obs_dim: int, act_dim: int, *, hidden_sizes: Sequence[int],
                 inner_lr: float, lr: float, steps: int, action_samples: int, optimizer: str = "sgd"):
        if kind not in ("meta", "task"):
            raise ValueError(f"unknown control variate {kind!r}")
        if optimizer not in CV_OPTIMIZERS:
            raise ValueError(f"unknown control-variate optimizer {optimizer!r}; valid: {CV_OPTIMIZERS}")
        self.kind, self.obs_dim, self.act_dim = kind, obs_dim, act_dim
        self.net = ValueMLP(tuple(int(h) for h in hidden_sizes))
        self.inner_lr, self.lr, self.steps, self.action_samples = inner_lr, lr, steps, action_samples
        self.optimizer = CV_OPTIMIZERS[optimizer](lr)
        self._attach = jax.jit(self._attach_impl)

    def input_dim(self) -> int:
        return self.obs_dim + 1 + (self.act_dim if self.kind == "task" else 0)

    def init(self, key: jax.Array) -> CVState:
        params = self.net.init(key, jnp.zeros((1, self.input_dim()), jnp.float32))
        return CVState(params, self.optimizer.init(params) if self.kind == "meta" else ())

    def _value(self, params: Params, x: jax.Array) -> jax.Array:
        return self.net.apply(params, x)

    def _attach_impl(self, state: CVState, batch: StepBatch, key: jax.Array):
        targets = est.reward_to_go(batch.dice_rewards, batch.mask)  # already discount-folded
        params = state.params
        if self.kind == "task":
            noise = jax.random.normal(key, (self.action_samples,), batch.actions.dtype)
            values = jax.vmap(lambda b, y: task_cv_values(self._value, params, b, y, noise, self.lr,
                                                          self.steps))(batch, targets)
            # each coordinate's b^i estimates Ψ̃; their mean summarises the fit
            quality = explained_variance(jnp.mean(values, axis=-1), targets, batch.mask)
            return state, batch._replace(cv_baselines=values), jnp.asarray(0.0), quality
        features = state_features(batch.observations)
        # Baselines first, from φ before this batch's update: φ has seen only earlier batches, and
        # the one MAML step is cross-fitted, so no rollout shapes the b it is evaluated with.
        values = jax.vmap(lambda f, y, m: meta_cv_values(self._value, params, f, y, m, self.inner_lr))(
            features, targets, batch.mask)

        def meta_loss(phi, interleaved):
            per_task = jax.vmap(lambda f, y, m: meta_cv_task_loss(self._value, phi, f, y, m, self.inner_lr,
                                                                  interleaved))
            return jnp.mean(per_task(features, targets, batch.mask))

        def update(carry, interleaved: bool):
            params, opt_state, _ = carry
            loss, grads = jax.value_and_grad(meta_loss)(params, interleaved)
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        # Repetition r uses the interleaved split when r is odd (a static choice), so the loop
        # scans over (plain, interleaved) pairs: one compiled pair instead of ``steps`` unrolled.
        carry = (params, state.opt_state, jnp.zeros((), targets.dtype))
        carry, _ = jax.lax.scan(lambda c, _: (update(update(c, False), True), None), carry, None,
                                length=self.steps // 2)
        if self.steps % 2:
            carry = update(carry, False)
        params, opt_state, loss = carry
        quality = explained_variance(values, targets, batch.mask)
        return CVState(params, opt_state), batch._replace(cv_baselines=values), loss, quality

    def attach(self, state: CVState, batch: StepBatch, key: jax.Array) -> tuple[CVState, StepBatch, dict]:
        """Set ``batch.cv_baselines`` and update the control variate on ``batch``.

        ``meta``: the baselines come from the parameters *before* this batch's ``cv_steps`` Alg. 1
        updates (cross-fitted per task). ``task``: fresh per-task fits, ψ₀ unchanged.
        Returns (new state, batch, stats): ``loss`` — the last Alg. 1 loss (0 for ``task``) —
        and ``explained_variance`` of Ψ̃ by the baselines attached to this batch."""
        state, batch, loss, quality = self._attach(state, batch, key)
        return state, batch, {"loss": float(loss), "explained_variance": float(quality)}


def control_variate_for(config: Any, obs_dim: int, act_dim: int) -> ControlVariate | None:
    """The :class:`ControlVariate` of a :class:`~adaptrl.meta.config.TrainConfig`, or None."""
    if config.control_variate == "none":
        return None
    return ControlVariate(config.control_variate, obs_dim, act_dim, hidden_sizes=config.cv_hidden_sizes,
                          inner_lr=config.cv_inner_lr, lr=config.cv_lr, steps=config.cv_steps,
                          action_samples=config.cv_action_samples, optimizer=config.cv_optimizer)
