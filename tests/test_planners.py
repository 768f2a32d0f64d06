"""Tests of the MPC planners (src/adaptrl/planners.py) on small problems with known answers."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptrl.errors import ConfigError
from adaptrl.planners import (
    CEM,
    MPPI,
    PLANNERS,
    PlanState,
    RandomShooting,
    batched_plan,
    cem_update,
    filtered_sequences,
    make_planner,
    mppi_update,
    mppi_weights,
    sequence_returns,
    shift_plan,
)

NEVER = jnp.array(False)


def integrator(params, s, a, particle, key):
    """True dynamics of an integrator s' = s + gain·a with reward −‖s' − goal‖² (both in params)."""
    s_next = s + params["gain"] * a
    return s_next, -jnp.sum((s_next - params["goal"]) ** 2), NEVER


def action_reward(target):
    """A one-step problem: the reward −‖a − target‖² ignores the state."""

    def step(params, s, a, particle, key):
        return s, -jnp.sum((a - target) ** 2), NEVER

    return step


def box(dim, low=-1.0, high=1.0):
    return jnp.full((dim,), low), jnp.full((dim,), high)


def init_states(planner, n, dim, low, high):
    return jax.vmap(lambda _: planner.init(dim, low, high))(jnp.arange(n))


SMALL = {
    "random_shooting": RandomShooting(horizon=3, candidates=1000),
    "cem": CEM(horizon=5, candidates=100, elites=10, iterations=4),
    "mppi": MPPI(horizon=5, candidates=128, noise_std=0.3),
}
STARTS = np.array([[-2.0, 1.0], [0.0, 0.0], [4.0, -4.0]])  # three environments
GOAL = np.array([2.5, -1.5])


@functools.cache
def jitted_batched(name, dim):
    """``batched_plan`` of ``SMALL[name]`` through :func:`integrator`, jitted once per (name, dim)
    and shared by the tests below (its own compilation cache, as ``partial`` is a new callable)."""
    return jax.jit(functools.partial(batched_plan, SMALL[name], integrator))


def true_params(dim, goal=GOAL):
    return {"gain": jnp.array(1.0), "goal": jnp.asarray(goal[:dim], jnp.float32)}


# Final distance to the goal (max over the last 5 of 25 closed-loop steps and over the starts).
# Random shooting is coarser: its action is the best of uniform samples, never refined.
TOLERANCE = {("random_shooting", 1): 0.3, ("random_shooting", 2): 0.8, ("cem", 1): 0.15,
             ("cem", 2): 0.35, ("mppi", 1): 0.15, ("mppi", 2): 0.3}


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("name", list(SMALL))
def test_closed_loop_reaches_goal(name, dim):
    planner, plan = SMALL[name], jitted_batched(name, dim)
    low, high = box(dim)
    params = true_params(dim)
    s, states = jnp.asarray(STARTS[:, :dim], jnp.float32), init_states(planner, 3, dim, low, high)
    distances = []
    for key in jax.random.split(jax.random.key(0), 25):
        a, states, _ = plan(params, states, s, key, low, high)
        s = s + a  # the true environment
        distances.append(np.linalg.norm(np.asarray(s) - GOAL[:dim], axis=-1))
    tol = TOLERANCE[name, dim]
    assert np.linalg.norm(STARTS[:, :dim] - GOAL[:dim], axis=-1).min() > 2 * tol
    assert np.max(distances[-5:]) < tol, distances[-5:]


@pytest.mark.parametrize("name", list(SMALL))
def test_warm_start_is_the_plan_shifted_by_one(name):
    planner, plan = SMALL[name], jitted_batched(name, 1)
    low, high = box(1)
    state = init_states(planner, 3, 1, low, high)
    np.testing.assert_array_equal(state.mean, jnp.zeros((3, planner.horizon, 1)))  # box centre
    for k in range(2):
        action, new_state, info = plan(true_params(1), state, jnp.asarray(STARTS[:, :1], jnp.float32),
                                       jax.random.key(k), low, high)
        chosen = np.asarray(info["plan"])  # [3, H, 1]
        np.testing.assert_array_equal(new_state.mean[:, :-1], chosen[:, 1:])
        np.testing.assert_array_equal(new_state.mean[:, -1], chosen[:, -1])  # last step repeated
        np.testing.assert_array_equal(action, chosen[:, 0])
        np.testing.assert_array_equal(new_state.last_action, action)
        state = new_state
    np.testing.assert_array_equal(shift_plan(jnp.arange(3.0)), [1.0, 2.0, 2.0])


@pytest.mark.parametrize("name", list(SMALL))
def test_jitted_batched_plan_compiles_once_and_is_deterministic(name):
    planner, plan = SMALL[name], jitted_batched(name, 1)
    low, high = box(1)
    obs = jnp.array([[0.5], [-0.3], [0.2]])
    states = init_states(planner, 3, 1, low, high)
    key = jax.random.key(7)
    zero_goal = true_params(1, np.zeros(1))
    a1, s1, info = plan(zero_goal, states, obs, key, low, high)
    a2, _, _ = plan({**zero_goal, "gain": jnp.array(-2.0)}, s1, obs, key, low, high)
    assert plan._cache_size() == 1
    assert info["predicted_return"].shape == (3,) and a1.shape == (3, 1)
    assert np.all(np.sign(a1[:, 0]) == -np.sign(obs[:, 0]))  # gain 1: push towards 0
    assert np.all(np.sign(a2[:, 0]) == np.sign(obs[:, 0]))  # gain −2: the opposite way
    # determinism: the same key gives the same action, another key another one
    np.testing.assert_array_equal(a1, plan(zero_goal, states, obs, key, low, high)[0])
    assert not np.array_equal(a1, plan(zero_goal, states, obs, jax.random.key(8), low, high)[0])
    assert plan._cache_size() == 1


@pytest.mark.parametrize(("planner", "tol"), [
    (CEM(horizon=1, candidates=200, elites=20, iterations=6), 0.01),
    (MPPI(horizon=1, candidates=256, smoothing=1.0, iterations=4, temperature=50.0, noise_std=0.3), 0.05),
])
def test_known_optimal_first_action(planner, tol):
    # Box [−1, 2] × [−1, 0.5]; the optimum of −‖a − (0.7, 3)‖² in it is (0.7, 0.5): inside the box
    # in the first coordinate, on its bound in the second.
    low, high = jnp.array([-1.0, -1.0]), jnp.array([2.0, 0.5])
    step = action_reward(jnp.array([0.7, 3.0]))
    plan = jax.jit(planner.plan, static_argnums=0)
    action, _, info = plan(step, {}, planner.init(2, low, high), jnp.zeros(1), jax.random.key(3),
                           low, high)
    np.testing.assert_allclose(action, [0.7, 0.5], atol=tol)
    assert np.all(info["plan"] >= low) and np.all(info["plan"] <= high)
    np.testing.assert_allclose(info["predicted_return"], -np.sum((np.asarray(action) - [0.7, 3.0]) ** 2),
                               rtol=1e-5)


def test_cem_update_matches_hand_computation():
    samples = jnp.array([0.0, 1.0, 2.0, 3.0]).reshape(4, 1, 1)
    returns = jnp.array([0.5, 3.0, 1.0, 2.0])  # the two elites are the samples 1 and 3
    mean, std = cem_update(jnp.zeros((1, 1)), jnp.full((1, 1), 2.0), samples, returns, elites=2,
                           momentum=0.25)
    # elite mean 2, elite std 1: μ' = 0.25·0 + 0.75·2, σ' = 0.25·2 + 0.75·1
    np.testing.assert_allclose(mean, [[1.5]])
    np.testing.assert_allclose(std, [[1.25]])


def test_mppi_weights_and_update_match_hand_computation():
    returns = jnp.array([0.0, 1.0, 2.0])
    w = mppi_weights(returns, temperature=float(np.log(2.0)))  # ∝ 2^R = 1, 2, 4
    np.testing.assert_allclose(w, np.array([1.0, 2.0, 4.0]) / 7.0, rtol=1e-6)
    samples = jnp.array([0.0, 7.0, 14.0]).reshape(3, 1, 1)
    np.testing.assert_allclose(mppi_update(samples, returns, float(np.log(2.0))), [[(14 + 56) / 7]],
                               rtol=1e-6)
    # −∞ (e.g. NaN) returns get no weight; all non-finite: uniform
    np.testing.assert_allclose(mppi_weights(jnp.array([-jnp.inf, 0.0]), 1.0), [0.0, 1.0])
    np.testing.assert_allclose(mppi_weights(jnp.array([-jnp.inf, -jnp.inf]), 1.0), [0.5, 0.5])


def test_filtered_sequences_match_hand_computation():
    mean = jnp.ones((2, 1))
    eps = jnp.array([1.0, -1.0]).reshape(1, 2, 1)
    # u0 = 0.5·(1 + 1) + 0.5·0 = 1, u1 = 0.5·(1 − 1) + 0.5·1 = 0.5
    u = filtered_sequences(mean, eps, jnp.zeros(1), 0.5, -jnp.ones(1), jnp.ones(1))
    np.testing.assert_allclose(u[0, :, 0], [1.0, 0.5])
    # clipped inside the recursion: u0 = 0.8, u1 = 0.5·0 + 0.5·0.8
    u = filtered_sequences(mean, eps, jnp.zeros(1), 0.5, -0.8 * jnp.ones(1), 0.8 * jnp.ones(1))
    np.testing.assert_allclose(u[0, :, 0], [0.8, 0.4], rtol=1e-6)


returns_of = jax.jit(sequence_returns, static_argnums=0, static_argnames=("particles", "discount"))


def jit_plan(planner):
    return jax.jit(planner.plan, static_argnums=0)


def test_warm_start_and_initial_plan_are_used():
    low, high = box(1)
    params = true_params(1, np.zeros(1))
    warm = PlanState(mean=jnp.array([[0.3], [0.2], [0.1]]), last_action=jnp.zeros(1))
    proposal = jnp.array([[-0.6], [0.5], [3.0]])  # its last step is outside the box
    cem = CEM(horizon=3, candidates=8, elites=2, iterations=1, init_std=1e-4)
    mppi = MPPI(horizon=3, candidates=8, noise_std=1e-4, smoothing=1.0)
    for planner in (cem, mppi):  # almost no noise: the plan stays where it started
        plan = jit_plan(planner)
        _, _, info = plan(integrator, params, warm, jnp.zeros(1), jax.random.key(0), low, high)
        np.testing.assert_allclose(info["plan"], warm.mean, atol=1e-3)
        _, _, info = plan(integrator, params, warm, jnp.zeros(1), jax.random.key(0), low, high, proposal)
        np.testing.assert_allclose(info["plan"], [[-0.6], [0.5], [1.0]], atol=1e-3)  # clipped
    # random shooting ignores the warm start and adds the proposal as one more candidate
    rs = RandomShooting(horizon=3, candidates=4)
    plan = jit_plan(rs)
    obs = jnp.array([0.6])  # the proposal's first step reaches the goal 0 and stays there
    a1, _, _ = plan(integrator, params, warm, obs, jax.random.key(1), low, high)
    a2, _, _ = plan(integrator, params, rs.init(1, low, high), obs, jax.random.key(1), low, high)
    np.testing.assert_array_equal(a1, a2)
    proposal = jnp.array([[-0.6], [0.0], [0.0]])
    _, _, info = plan(integrator, params, warm, obs, jax.random.key(1), low, high, proposal)
    np.testing.assert_array_equal(info["plan"], proposal)
    np.testing.assert_allclose(info["predicted_return"], 0.0, atol=1e-10)
    with pytest.raises(ConfigError, match=r"initial_plan must have shape \[horizon, act\] = \(3, 1\)"):
        rs.plan(integrator, params, warm, obs, jax.random.key(1), low, high, jnp.zeros((2, 1)))


def terminating(params, s, a, particle, key):
    """s counts steps; the step reaching s = 3 reports done; afterwards rewards would be NaN."""
    s_next = s + 1.0
    reward = jnp.where(s[0] >= 3.0, jnp.nan, 1.0)
    return s_next, reward, s_next[0] >= 3.0


def test_termination_masks_later_rewards():
    actions = jnp.zeros((2, 10, 1))
    returns = returns_of(terminating, {}, jnp.zeros(1), actions, jax.random.key(0))
    np.testing.assert_allclose(returns, [3.0, 3.0])  # steps 0, 1, 2 count; 3…9 do not
    returns = returns_of(terminating, {}, jnp.zeros(1), actions, jax.random.key(0), discount=0.5)
    np.testing.assert_allclose(returns, [1.75, 1.75])  # 1 + 0.5 + 0.25
    low, high = box(1)
    for planner in (RandomShooting(horizon=10, candidates=4), MPPI(horizon=10, candidates=4)):
        _, _, info = jit_plan(planner)(terminating, {}, planner.init(1, low, high), jnp.zeros(1),
                                       jax.random.key(0), low, high)
        np.testing.assert_allclose(info["predicted_return"], 3.0)


def per_particle(params, s, a, particle, key):  # reward = the particle index
    return s, particle.astype(jnp.float32), NEVER


def ensemble(params, s, a, particle, key):  # "member" p mod 2 wants the action p mod 2
    return s, -jnp.sum((a - (particle % 2)) ** 2), NEVER


def noisy(params, s, a, particle, key):
    return s, jax.random.normal(key), NEVER


def noisy_first_particle(params, s, a, particle, key):  # particle 0's noise, counted twice
    return s, 2.0 * jax.random.normal(key) * (particle == 0), NEVER


def test_return_is_the_mean_over_particles():
    key = jax.random.key(0)
    returns = returns_of(per_particle, {}, jnp.zeros(1), jnp.zeros((3, 2, 1)), key, particles=4)
    np.testing.assert_allclose(returns, [3.0] * 3)  # 2 steps × mean(0, 1, 2, 3)
    returns = returns_of(ensemble, {}, jnp.zeros(1), jnp.full((1, 1, 1), 0.25), key, particles=4)
    np.testing.assert_allclose(returns, [-(0.25**2 + 0.75**2) / 2])
    low, high = box(1)
    rs = RandomShooting(horizon=1, candidates=500, particles=4)
    action, _, _ = jit_plan(rs)(ensemble, {}, rs.init(1, low, high), jnp.zeros(1), key, low, high)
    np.testing.assert_allclose(action, [0.5], atol=0.02)  # the optimum of the particle mean
    # each particle has its own keys; all candidates share them (common random numbers)
    returns = returns_of(noisy, {}, jnp.zeros(1), jnp.zeros((2, 1, 1)), key, particles=2)
    assert returns[0] == returns[1]
    first = returns_of(noisy_first_particle, {}, jnp.zeros(1), jnp.zeros((2, 1, 1)), key, particles=2)
    assert abs(float(returns[0] - first[0])) > 1e-3


def test_batched_plan_is_independent_per_environment():
    planner = MPPI(horizon=3, candidates=32)
    low, high = box(1)
    obs = jnp.array([[0.5], [-0.3], [0.1]])
    params = {"gain": jnp.array([1.0, -2.0, 0.5]), "goal": jnp.zeros((3, 1))}  # a model per environment
    states = init_states(planner, 3, 1, low, high)
    key = jax.random.key(4)
    actions, _, _ = jax.jit(batched_plan, static_argnums=(0, 1), static_argnames="params_axis")(
        planner, integrator, params, states, obs, key, low, high, params_axis=0)
    plan = jit_plan(planner)
    for i, k in enumerate(jax.random.split(key, 3)):
        single, _, _ = plan(integrator, jax.tree.map(lambda x, i=i: x[i], params),
                            planner.init(1, low, high), obs[i], k, low, high)
        np.testing.assert_allclose(actions[i], single, rtol=1e-5, atol=1e-6)


def test_registry_and_make_planner():
    assert PLANNERS.names() == ("random_shooting", "cem", "mppi")
    assert PLANNERS.get("cem") is CEM
    planner = make_planner("mppi", temperature=3, horizon=7.0)
    assert planner == MPPI(horizon=7, temperature=3.0)
    assert isinstance(planner.horizon, int)
    assert RandomShooting().candidates == 1000 and RandomShooting().horizon == 10  # MB-MPC defaults


@pytest.mark.parametrize(("name", "settings", "message"), [
    ("cem", {"elites": 600}, r"CEM elites must be an integer in \[1, candidates\] = \[1, 500\], got 600"),
    ("random_shooting", {"horizon": 0}, r"RandomShooting horizon must be a positive integer, got 0"),
    ("random_shooting", {"horizon": float("inf")}, r"RandomShooting horizon must be a positive integer"),
    ("cem", {"iterations": 2.5}, r"CEM iterations must be a positive integer"),
    ("mppi", {"temperature": 0.0}, r"MPPI temperature must be a number in \(0, inf\), got 0.0"),
    ("mppi", {"smoothing": 1.5}, r"MPPI smoothing must be a number in \(0, 1\], got 1.5"),
    ("mppi", {"smoothing": 0}, r"MPPI smoothing must be a number in \(0, 1\], got 0"),
    ("mppi", {"noise_std": float("nan")}, r"MPPI noise_std must be a number in \(0, inf\)"),
    ("cem", {"momentum": 1.0}, r"CEM momentum must be a number in \[0, 1\), got 1.0"),
    ("cem", {"init_std": -1}, r"CEM init_std must be a number in \(0, inf\), got -1"),
    ("random_shooting", {"discount": 1.5}, r"RandomShooting discount must be a number in \(0, 1\]"),
    ("random_shooting", {"particles": True}, r"RandomShooting particles must be a positive integer"),
    ("cem", {"elite": 5}, r"unknown cem planner setting\(s\) 'elite'\. Valid settings: horizon, "
                          r"candidates, elites,"),
    ("mpi", {}, r"unknown planner 'mpi'\. Did you mean 'mppi'\?"),
])
def test_bad_settings_raise_config_error(name, settings, message):
    with pytest.raises(ConfigError, match=message):
        make_planner(name, **settings)
