"""Policy: the Gaussian MLP of ProMP (Rothfuss et al., 2019) App. D.1 Table 1, initialised as the
original ProMP code (docs/algorithms.md), and Gaussian formulas."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptrl.errors import ConfigError
from adaptrl.policies import (
    QuadraticFeaturePolicy,
    gaussian_kl,
    gaussian_log_prob,
    init_params,
    make_policy,
    per_task,
)


def test_gaussian_mlp_structure_and_init():
    """tanh (64, 64), Glorot-uniform kernels, zero biases, state-independent log-std = 0."""
    policy = make_policy(6)
    params = init_params(policy, jax.random.PRNGKey(0), 17)["params"]
    assert set(params) == {"hidden_0", "hidden_1", "output", "log_std"}
    assert params["hidden_0"]["kernel"].shape == (17, 64)
    assert params["hidden_1"]["kernel"].shape == (64, 64)
    assert params["output"]["kernel"].shape == (64, 6)
    for layer, (fan_in, fan_out) in {"hidden_0": (17, 64), "hidden_1": (64, 64),
                                     "output": (64, 6)}.items():
        limit = math.sqrt(6 / (fan_in + fan_out))
        kernel = np.asarray(params[layer]["kernel"])
        assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.8 * limit
        assert np.all(np.asarray(params[layer]["bias"]) == 0)
    np.testing.assert_array_equal(params["log_std"], np.zeros(6))
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
    assert n_params == 17 * 64 + 64 + 64 * 64 + 64 + 64 * 6 + 6 + 6


def test_forward_is_tanh_mlp_and_log_std_state_independent():
    policy = make_policy(2, hidden_sizes=(5,))
    variables = init_params(policy, jax.random.PRNGKey(1), 3)
    p = variables["params"]
    obs = jax.random.normal(jax.random.PRNGKey(2), (4, 3))
    mean, log_std = policy.apply(variables, obs)
    hidden = jnp.tanh(obs @ p["hidden_0"]["kernel"] + p["hidden_0"]["bias"])
    np.testing.assert_allclose(mean, hidden @ p["output"]["kernel"] + p["output"]["bias"], rtol=1e-6)
    assert log_std.shape == (4, 2) and np.all(np.asarray(log_std) == np.asarray(log_std)[0])


def test_log_prob_closed_form():
    x, mean, log_std = jnp.asarray([0.3, -1.0]), jnp.asarray([0.0, 0.5]), jnp.asarray([0.1, -0.4])
    sigma = np.exp(np.asarray(log_std))
    expected = sum(-np.log(s) - 0.5 * ((xi - mi) / s) ** 2 - 0.5 * np.log(2 * np.pi)
                   for xi, mi, s in zip(np.asarray(x), np.asarray(mean), sigma, strict=True))
    np.testing.assert_allclose(gaussian_log_prob(x, mean, log_std), expected, rtol=1e-6)


def test_kl_closed_form_and_numerical_integral():
    mp, lp, mq, lq = 0.3, -0.2, -0.5, 0.4
    grid = np.linspace(-12, 12, 200001)
    logp = -lp - 0.5 * ((grid - mp) / np.exp(lp)) ** 2 - 0.5 * np.log(2 * np.pi)
    logq = -lq - 0.5 * ((grid - mq) / np.exp(lq)) ** 2 - 0.5 * np.log(2 * np.pi)
    numeric = np.trapezoid(np.exp(logp) * (logp - logq), grid)
    kl = gaussian_kl(jnp.asarray([mp]), jnp.asarray([lp]), jnp.asarray([mq]), jnp.asarray([lq]))
    np.testing.assert_allclose(kl, numeric, rtol=1e-5)
    assert float(gaussian_kl(jnp.ones(3), jnp.zeros(3), jnp.ones(3), jnp.zeros(3))) == 0.0


def test_per_task_and_quadratic_policy():
    policy = QuadraticFeaturePolicy()
    variables = init_params(policy, jax.random.PRNGKey(0), 1)
    np.testing.assert_allclose(variables["params"]["theta"], [0.09, 0.05])
    mean, log_std = policy.apply(variables, jnp.asarray([[2.0], [-1.0]]))
    np.testing.assert_allclose(mean[:, 0], [0.09 * 4 + 0.05, 0.09 + 0.05], rtol=1e-6)
    np.testing.assert_array_equal(log_std, 0.0)
    batched = per_task(variables, 5)
    assert batched["params"]["theta"].shape == (5, 2)


def test_bad_policy_config():
    with pytest.raises(ConfigError, match="hidden sizes"):
        make_policy(2, hidden_sizes=(64, 0))
    with pytest.raises(ConfigError, match="init_std"):
        make_policy(2, init_std=0.0)
    with pytest.raises(ConfigError, match="policy kind"):
        make_policy(2, kind="rnn")
