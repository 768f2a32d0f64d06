"""Sampling-based model-predictive control (MPC): random shooting, CEM and MPPI.

A planner chooses the first action of an H-step action sequence that maximises the predicted
return from the current observation, executes it, and re-plans at the next step (receding
horizon). Planners know nothing about models: they plan through any *step function* of one row,

    step_fn(params, obs [obs], action [act], particle (traced int), key) → (next_obs, reward, done)

which the planner vmaps over candidates × particles. ``params`` is passed through untouched (model
weights, adapted weights, or ``{}`` for a true dynamics), so a planner jitted once is reused when
the weights change. ``particle`` ∈ [0, P) lets a learned ensemble give particle p to member
p mod K for the whole horizon (PETS's TS∞, Chua et al. 2018 §5); a true dynamics ignores it.

Return of an action sequence a_{0:H} (:func:`sequence_returns`), with termination masking:

    R(a) = (1/P) Σ_p Σ_{t<H} γ^t r_t^p Π_{t'<t} (1 − d_{t'}^p)

(the reward of the terminating step counts, later ones count 0; NaN returns rank as −∞).

Planners (docs/model-based.md):

* :class:`RandomShooting` — N sequences uniform in the action box, execute the first action of the
  best (Nagabandi et al. 2017; the MB-MPC baseline of Clavera thesis §5.5.2, and the real-robot
  planner of GrBAL/ReBAL, thesis §9.4).
* :class:`CEM` — cross-entropy method: sample N(μ, σ²), refit μ, σ to the top-k (elites) with
  momentum; execute the better of the final mean and the best sample (thesis §7.4.4 plans with CEM
  initialised from the policy: pass the policy's proposal as ``initial_plan``).
* :class:`MPPI` — the simulated GrBAL/ReBAL planner (thesis §9.2.2, §9.4; Williams et al. 2015),
  in the form of PDDM (Nagabandi et al. 2019, "Deep Dynamics Models for Learning Dexterous
  Manipulation", §4, "Filtering and Reward-Weighted Refinement"): time-filtered noise and a
  softmax(γR)-weighted average of the samples.

Conventions shared by all planners:

* The action box is ``low``/``high`` ``[act]``; centre c = (high + low)/2, half-range
  h = (high − low)/2. Every candidate is clipped to the box; noise scales are fractions of h.
* Common random numbers: the step function's key depends on (particle, step) only, so every
  candidate of one call (and every CEM/MPPI iteration) meets the same model noise and
  comparisons between candidates are not confounded by it.
* :class:`PlanState` holds the warm start: after each call the chosen plan *shifted by one step
  with its last step repeated*, and the action just returned (MPPI's u_{−1}). Reset it with
  ``planner.init`` when the environment resets.
* ``plan`` is pure and jittable with the planner and ``step_fn`` static (planners are frozen,
  hashable dataclasses); :func:`batched_plan` vmaps it over B environments with independent keys.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from adaptrl.errors import ConfigError, require_positive_int
from adaptrl.registry import Registry

__all__ = [
    "CEM",
    "MPPI",
    "PLANNERS",
    "PlanState",
    "Planner",
    "RandomShooting",
    "StepFn",
    "batched_plan",
    "cem_update",
    "filtered_sequences",
    "gaussian_sequences",
    "make_planner",
    "mppi_update",
    "mppi_weights",
    "sequence_returns",
    "shift_plan",
    "uniform_sequences",
]

StepFn = Callable[[Any, Array, Array, Array, Array], tuple[Array, Array, Array]]
"""``(params, obs [obs], action [act], particle, key) → (next_obs [obs], reward [], done [])``."""


class PlanState(NamedTuple):
    """Warm start carried between ``plan`` calls of one environment."""

    mean: Array         # [H, act] the current plan, in the action box (shifted after each call)
    last_action: Array  # [act] the action returned by the previous call (box centre initially)


# ----------------------------------------------------------------------------- pure building blocks


def shift_plan(plan: ArrayLike) -> Array:
    """``[a_1, …, a_{H−1}, a_{H−1}]``: drop the executed step, repeat the last one."""
    plan = jnp.asarray(plan)
    return jnp.concatenate([plan[1:], plan[-1:]], axis=0)


def sequence_returns(step_fn: StepFn, params: Any, obs: ArrayLike, actions: ArrayLike, key: Array,
                     particles: int = 1, discount: float = 1.0) -> Array:
    """Predicted returns ``[N]`` of the action sequences ``actions [N, H, act]`` from ``obs``.

    R_n = (1/P) Σ_p Σ_t γ^t r_t^{n,p} Π_{t'<t}(1 − d_{t'}^{n,p}): each of the P particles is
    rolled out through ``step_fn`` with its index p and its own keys (the same for every candidate
    n); a reward after the step that reported ``done`` is replaced by 0 (``jnp.where``, so even
    non-finite post-termination rewards are masked). NaN returns are reported as −∞.
    """
    obs = jnp.asarray(obs, jnp.result_type(float))
    actions = jnp.asarray(actions)
    horizon = actions.shape[1]
    step_keys = jax.random.split(key, (particles, horizon))

    def rollout(seq: Array, particle: Array, keys: Array) -> Array:
        def step(carry, x):
            s, alive, ret, weight = carry
            a, k = x
            s_next, r, d = step_fn(params, s, a, particle, k)
            r, d = jnp.reshape(jnp.asarray(r, ret.dtype), ()), jnp.reshape(jnp.asarray(d, bool), ())
            ret = ret + jnp.where(alive, weight * r, 0.0)
            alive = alive & ~d
            return (jnp.asarray(s_next, s.dtype), alive, ret, weight * discount), None

        init = (obs, jnp.array(True), jnp.zeros((), obs.dtype), jnp.ones((), obs.dtype))
        (_, _, ret, _), _ = jax.lax.scan(step, init, (seq, keys))
        return ret

    per_particle = jax.vmap(rollout, (None, 0, 0))
    per_candidate = jax.vmap(per_particle, (0, None, None))
    returns = per_candidate(actions, jnp.arange(particles), step_keys).mean(axis=1)
    return jnp.where(jnp.isnan(returns), -jnp.inf, returns)


def uniform_sequences(key: Array, n: int, horizon: int, low: ArrayLike, high: ArrayLike) -> Array:
    """``[n, horizon, act]`` action sequences uniform in the box [low, high]."""
    low, high = jnp.asarray(low), jnp.asarray(high)
    return jax.random.uniform(key, (n, horizon, low.shape[-1]), low.dtype, low, high)


def gaussian_sequences(key: Array, n: int, mean: ArrayLike, std: ArrayLike, low: ArrayLike,
                       high: ArrayLike) -> Array:
    """``[n, H, act]`` samples clip(μ + σ ⊙ ε, low, high), ε ~ N(0, I), μ, σ ``[H, act]``."""
    mean = jnp.asarray(mean)
    eps = jax.random.normal(key, (n, *mean.shape), mean.dtype)
    return jnp.clip(mean + jnp.asarray(std) * eps, low, high)


def cem_update(mean: ArrayLike, std: ArrayLike, samples: ArrayLike, returns: ArrayLike, elites: int,
               momentum: float) -> tuple[Array, Array]:
    """One CEM refit: the k = ``elites`` highest-return samples E ⊂ ``samples [N, H, act]`` give

        μ' = m·μ + (1 − m)·mean_E(a),   σ' = m·σ + (1 − m)·std_E(a)

    (per step and coordinate; std_E is the population standard deviation, m = ``momentum``)."""
    samples = jnp.asarray(samples)
    _, idx = jax.lax.top_k(jnp.asarray(returns), elites)
    elite = samples[idx]
    new_mean = momentum * jnp.asarray(mean) + (1.0 - momentum) * elite.mean(axis=0)
    new_std = momentum * jnp.asarray(std) + (1.0 - momentum) * elite.std(axis=0)
    return new_mean, new_std


def filtered_sequences(mean: ArrayLike, eps: ArrayLike, last_action: ArrayLike, smoothing: float,
                       low: ArrayLike, high: ArrayLike) -> Array:
    """PDDM's filtered samples ``[N, H, act]`` from the mean ``[H, act]`` and noise ``eps [N, H, act]``:

        u_t = clip(β(μ_t + ε_t) + (1 − β) u_{t−1}, low, high),   u_{−1} = ``last_action``

    (β = ``smoothing``; β = 1 is unfiltered noise)."""
    mean, eps = jnp.asarray(mean), jnp.asarray(eps)
    u_prev = jnp.broadcast_to(jnp.asarray(last_action, eps.dtype), (eps.shape[0], eps.shape[-1]))

    def step(u_prev, x):
        mu, e = x
        u = jnp.clip(smoothing * (mu + e) + (1.0 - smoothing) * u_prev, low, high)
        return u, u

    _, u = jax.lax.scan(step, u_prev, (mean, jnp.swapaxes(eps, 0, 1)))
    return jnp.swapaxes(u, 0, 1)


def mppi_weights(returns: ArrayLike, temperature: float) -> Array:
    """Reward weights w_i = exp(γ(R_i − max R)) / Σ_j exp(γ(R_j − max R)) (softmax of γR).

    −∞ returns get weight 0; if no return is finite the weights are uniform."""
    returns = jnp.asarray(returns)
    top = jnp.max(returns)
    z = jnp.exp(temperature * (returns - jnp.where(jnp.isfinite(top), top, 0.0)))
    z = jnp.where(jnp.isfinite(top), z, jnp.ones_like(z))
    return z / jnp.sum(z)


def mppi_update(samples: ArrayLike, returns: ArrayLike, temperature: float) -> Array:
    """The reward-weighted mean μ' = Σ_i w_i u_i ``[H, act]`` (:func:`mppi_weights`, PDDM)."""
    w = mppi_weights(returns, temperature)
    return jnp.tensordot(w, jnp.asarray(samples), axes=1)


# ----------------------------------------------------------------------------- validation helpers


def _positive_int(planner: str, name: str, value: object) -> int:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{planner} {name} must be a positive integer, got {value!r}.")
    return require_positive_int(f"{planner} {name}", value)


def _number(planner: str, name: str, value: object, lo: float, hi: float, lo_open: bool,
            hi_open: bool) -> float:
    """``value`` as a float if it lies in the interval, else a :class:`ConfigError` naming it."""
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    valid = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if valid:
        v = float(value)
        valid = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not valid:
        raise ConfigError(f"{planner} {name} must be a number in {interval}, got {value!r}.")
    return float(value)


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _validate_common(p: RandomShooting | CEM | MPPI) -> None:
    kind = type(p).__name__
    for name in ("horizon", "candidates", "particles"):
        _set(p, name, _positive_int(kind, name, getattr(p, name)))
    _set(p, "discount", _number(kind, "discount", p.discount, 0.0, 1.0, True, False))


def _box(low: ArrayLike, high: ArrayLike, act_dim: int) -> tuple[Array, Array]:
    low = jnp.broadcast_to(jnp.asarray(low, jnp.result_type(float)), (act_dim,))
    high = jnp.broadcast_to(jnp.asarray(high, jnp.result_type(float)), (act_dim,))
    return low, high


def _initial_mean(state: PlanState, initial_plan: ArrayLike | None,
                  low: Array, high: Array) -> Array | None:
    """``initial_plan`` clipped to the box, after checking its shape; None when not given."""
    if initial_plan is None:
        return None
    initial_plan = jnp.asarray(initial_plan, state.mean.dtype)
    if initial_plan.shape != state.mean.shape:
        raise ConfigError(f"initial_plan must have shape [horizon, act] = {tuple(state.mean.shape)}, "
                          f"got {tuple(initial_plan.shape)}.")
    return jnp.clip(initial_plan, low, high)


def _init(p: RandomShooting | CEM | MPPI, act_dim: int, low: ArrayLike, high: ArrayLike) -> PlanState:
    act_dim = require_positive_int("act_dim", act_dim)
    low, high = _box(low, high, act_dim)
    centre = 0.5 * (low + high)
    return PlanState(mean=jnp.tile(centre, (p.horizon, 1)), last_action=centre)


def _finish(plan: Array, predicted_return: Array) -> tuple[Array, PlanState, dict[str, Array]]:
    """Receding horizon: execute ``plan[0]``, keep the shifted plan as the warm start."""
    action = plan[0]
    info = {"predicted_return": predicted_return, "plan": plan}
    return action, PlanState(mean=shift_plan(plan), last_action=action), info


def _start_mean(state: PlanState, initial_plan: ArrayLike | None, low: Array, high: Array) -> Array:
    """The mean a CEM/MPPI call starts from: ``initial_plan`` if given, else the warm start."""
    mean0 = _initial_mean(state, initial_plan, low, high)
    return jnp.clip(state.mean if mean0 is None else mean0, low, high)


class _Planner:
    """What every planner shares: the initial state."""

    horizon: int

    def init(self, act_dim: int, low: ArrayLike, high: ArrayLike) -> PlanState:
        """The initial state: a plan at the box centre."""
        return _init(self, act_dim, low, high)


# ----------------------------------------------------------------------------- planners


@dataclass(frozen=True)
class RandomShooting(_Planner):
    """Random shooting: the best of N action sequences drawn uniformly in the box.

    a^n ~ U([low, high]^{H×act}), n = 1…N (plus ``initial_plan`` as candidate N+1 when given);
    execute a^{n*}_0 with n* = argmax_n R(a^n). Each call samples afresh: the warm start in
    ``state.mean`` is updated (shifted best plan) but not used. Defaults: 1000 candidates ×
    horizon 10, the training-time planner of thesis App. E.5, Table 6 (n_A, H Train)."""

    horizon: int = 10
    candidates: int = 1000
    particles: int = 1
    discount: float = 1.0

    def __post_init__(self):
        _validate_common(self)

    def plan(self, step_fn: StepFn, params: Any, state: PlanState, obs: ArrayLike, key: Array,
             low: ArrayLike, high: ArrayLike, initial_plan: ArrayLike | None = None
             ) -> tuple[Array, PlanState, dict[str, Array]]:
        """``(action [act], next state, {"predicted_return", "plan"})`` for one environment."""
        low, high = _box(low, high, state.mean.shape[-1])
        key_sample, key_model = jax.random.split(key)
        candidates = uniform_sequences(key_sample, self.candidates, self.horizon, low, high)
        extra = _initial_mean(state, initial_plan, low, high)
        if extra is not None:
            candidates = jnp.concatenate([candidates, extra[None]], axis=0)
        returns = sequence_returns(step_fn, params, obs, candidates, key_model, self.particles,
                                   self.discount)
        best = jnp.argmax(returns)
        return _finish(candidates[best], returns[best])


@dataclass(frozen=True)
class CEM(_Planner):
    """Cross-entropy method with momentum, warm-started from the shifted previous plan.

    From μ⁰ = warm start (or ``initial_plan``), σ⁰ = ``init_std``·h, for each iteration i:
    candidates {μ^i} ∪ {clip(μ^i + σ^i ε_n)}_{n≤N}; (μ^{i+1}, σ^{i+1}) = :func:`cem_update` on the
    ``elites`` best. Executes the first action of the better of the final mean μ^I and the best
    sequence evaluated in any iteration (each iteration's mean is a candidate, so the result is
    never predicted worse than the warm start or ``initial_plan``). σ is reset to σ⁰ every call;
    only μ is warm-started."""

    horizon: int = 10
    candidates: int = 500
    elites: int = 50
    iterations: int = 5
    momentum: float = 0.1
    init_std: float = 0.5
    particles: int = 1
    discount: float = 1.0

    def __post_init__(self):
        _validate_common(self)
        _set(self, "iterations", _positive_int("CEM", "iterations", self.iterations))
        elites = _positive_int("CEM", "elites", self.elites)
        if elites > self.candidates:
            raise ConfigError(f"CEM elites must be an integer in [1, candidates] = [1, {self.candidates}], "
                              f"got {self.elites!r}.")
        _set(self, "elites", elites)
        _set(self, "momentum", _number("CEM", "momentum", self.momentum, 0.0, 1.0, False, True))
        _set(self, "init_std", _number("CEM", "init_std", self.init_std, 0.0, math.inf, True, True))

    def plan(self, step_fn: StepFn, params: Any, state: PlanState, obs: ArrayLike, key: Array,
             low: ArrayLike, high: ArrayLike, initial_plan: ArrayLike | None = None
             ) -> tuple[Array, PlanState, dict[str, Array]]:
        """``(action [act], next state, {"predicted_return", "plan"})`` for one environment."""
        low, high = _box(low, high, state.mean.shape[-1])
        key_sample, key_model = jax.random.split(key)
        mean0 = _start_mean(state, initial_plan, low, high)
        std0 = jnp.broadcast_to(self.init_std * 0.5 * (high - low), mean0.shape)

        def iteration(carry, k):
            mean, std, best_plan, best_return = carry
            noisy = gaussian_sequences(k, self.candidates, mean, std, low, high)
            samples = jnp.concatenate([mean[None], noisy], axis=0)
            returns = sequence_returns(step_fn, params, obs, samples, key_model, self.particles,
                                       self.discount)
            i = jnp.argmax(returns)
            better = returns[i] > best_return
            best_plan = jnp.where(better, samples[i], best_plan)
            best_return = jnp.where(better, returns[i], best_return)
            mean, std = cem_update(mean, std, samples, returns, self.elites, self.momentum)
            return (mean, std, best_plan, best_return), None

        init = (mean0, std0, mean0, jnp.array(-jnp.inf, mean0.dtype))
        keys = jax.random.split(key_sample, self.iterations)
        (mean, _, best_plan, best_return), _ = jax.lax.scan(iteration, init, keys)
        mean = jnp.clip(mean, low, high)
        mean_return = sequence_returns(step_fn, params, obs, mean[None], key_model, self.particles,
                                       self.discount)[0]
        use_mean = mean_return >= best_return
        return _finish(jnp.where(use_mean, mean, best_plan), jnp.maximum(mean_return, best_return))


@dataclass(frozen=True)
class MPPI(_Planner):
    """MPPI as in PDDM: filtered noise around the mean, reward-weighted averaging.

    From μ⁰ = warm start (or ``initial_plan``), for each iteration: ε_n ~ N(0, (``noise_std``·h)²),
    u^n = :func:`filtered_sequences` (β = ``smoothing``, u_{−1} = the previously executed action),
    μ ← Σ_n w_n u^n with w = softmax(γ R(u^n)) (γ = ``temperature``, :func:`mppi_update`).
    Executes μ_0; ``predicted_return`` is R(μ) of the final mean, evaluated with the same model
    keys. The thesis gives no MPPI settings (§9.4, App. E.5); defaults are ours."""

    horizon: int = 10
    candidates: int = 500
    temperature: float = 10.0
    noise_std: float = 0.5
    smoothing: float = 0.5
    iterations: int = 1
    particles: int = 1
    discount: float = 1.0

    def __post_init__(self):
        _validate_common(self)
        _set(self, "iterations", _positive_int("MPPI", "iterations", self.iterations))
        _set(self, "temperature", _number("MPPI", "temperature", self.temperature, 0.0, math.inf,
                                          True, True))
        _set(self, "noise_std", _number("MPPI", "noise_std", self.noise_std, 0.0, math.inf, True, True))
        _set(self, "smoothing", _number("MPPI", "smoothing", self.smoothing, 0.0, 1.0, True, False))

    def plan(self, step_fn: StepFn, params: Any, state: PlanState, obs: ArrayLike, key: Array,
             low: ArrayLike, high: ArrayLike, initial_plan: ArrayLike | None = None
             ) -> tuple[Array, PlanState, dict[str, Array]]:
        """``(action [act], next state, {"predicted_return", "plan"})`` for one environment."""
        low, high = _box(low, high, state.mean.shape[-1])
        key_sample, key_model = jax.random.split(key)
        mean0 = _start_mean(state, initial_plan, low, high)
        sigma = self.noise_std * 0.5 * (high - low)
        last_action = jnp.clip(state.last_action, low, high)

        def iteration(mean, k):
            eps = sigma * jax.random.normal(k, (self.candidates, *mean.shape), mean.dtype)
            samples = filtered_sequences(mean, eps, last_action, self.smoothing, low, high)
            returns = sequence_returns(step_fn, params, obs, samples, key_model, self.particles,
                                       self.discount)
            return mppi_update(samples, returns, self.temperature), None

        mean, _ = jax.lax.scan(iteration, mean0, jax.random.split(key_sample, self.iterations))
        mean = jnp.clip(mean, low, high)
        predicted = sequence_returns(step_fn, params, obs, mean[None], key_model, self.particles,
                                     self.discount)[0]
        return _finish(mean, predicted)


Planner = RandomShooting | CEM | MPPI

PLANNERS: Registry[type[RandomShooting] | type[CEM] | type[MPPI]] = Registry("planner")
PLANNERS.register("random_shooting", RandomShooting,
                  "best of N uniform action sequences (MB-MPC, thesis §5.5.2)")
PLANNERS.register("cem", CEM, "cross-entropy method with momentum, warm-started (thesis §7.4.4)")
PLANNERS.register("mppi", MPPI, "filtered noise, softmax(γR)-weighted mean (PDDM; thesis §9.4)")


def make_planner(name: str, **settings: Any) -> Planner:
    """The planner registered as ``name`` (:data:`PLANNERS`) with ``settings`` overriding its defaults.

    Raises :class:`ConfigError` for an unknown name, an unknown setting, or an invalid value."""
    cls = PLANNERS.get(name)
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise ConfigError(f"unknown {name} planner setting(s) {', '.join(map(repr, unknown))}. "
                          f"Valid settings: {', '.join(valid)}.")
    return cls(**settings)


def batched_plan(planner: Planner, step_fn: StepFn, params: Any, states: PlanState, obs: ArrayLike,
                 key: Array, low: ArrayLike, high: ArrayLike, initial_plans: ArrayLike | None = None,
                 params_axis: int | None = None) -> tuple[Array, PlanState, dict[str, Array]]:
    """``planner.plan`` for B environments: ``obs [B, obs]``, ``states`` with a leading B axis
    (e.g. ``jax.vmap(lambda _: planner.init(act, low, high))(jnp.arange(B))``), independent keys
    ``split(key, B)``. ``params`` is shared by default; ``params_axis=0`` gives each environment its
    own (e.g. GrBAL's per-environment adapted model). ``initial_plans`` is ``[B, H, act]`` or None.
    Returns ``(actions [B, act], states, info)`` with every info entry batched. Under ``jax.jit``,
    ``planner``, ``step_fn`` and ``params_axis`` are static; ``params`` is traced, so new weights of
    the same shapes reuse the compiled planner."""
    obs = jnp.asarray(obs)
    keys = jax.random.split(key, obs.shape[0])

    def one(p, state, o, k, proposal):
        return planner.plan(step_fn, p, state, o, k, low, high, proposal)

    plan_axis = None if initial_plans is None else 0
    return jax.vmap(one, (params_axis, 0, 0, 0, plan_axis))(params, states, obs, keys, initial_plans)
