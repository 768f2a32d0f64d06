"""Sample processing: returns, GAE, baselines, normalisation, as the original ProMP code
(docs/algorithms.md, "Sample processing")."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptrl import estimators as est
from adaptrl import processing as P

R, T, OBS = 4, 12, 3
LENGTHS = (12, 7, 1, 10)  # rollout lengths: full horizon, early terminations


def _mask(lengths=LENGTHS, horizon=T):
    return (np.arange(horizon)[None, :] < np.asarray(lengths)[:, None]).astype(np.float32)


def _batch(seed=0, garbage=np.nan):
    """Rewards, values, observations with ``garbage`` in every padded entry."""
    rng = np.random.default_rng(seed)
    mask = _mask()
    rewards = rng.normal(size=(R, T)).astype(np.float32)
    values = rng.normal(size=(R, T)).astype(np.float32)
    obs = rng.normal(size=(R, T, OBS)).astype(np.float32)
    pad = mask == 0
    rewards[pad], values[pad], obs[pad] = garbage, garbage, garbage
    return rewards, values, obs, mask


def _np_returns(rewards, lengths, gamma):
    out = np.zeros(rewards.shape)
    for i, n in enumerate(lengths):
        acc = 0.0
        for t in reversed(range(n)):
            acc = rewards[i, t] + gamma * acc
            out[i, t] = acc
    return out


def _np_gae(rewards, values, lengths, gamma, lam):
    out = np.zeros(rewards.shape)
    for i, n in enumerate(lengths):
        v = np.append(values[i, :n].astype(np.float64), 0.0)  # b_T = 0 appended (original code)
        deltas = rewards[i, :n] + gamma * v[1:] - v[:-1]
        acc = 0.0
        for t in reversed(range(n)):
            acc = deltas[t] + gamma * lam * acc
            out[i, t] = acc
    return out


def test_discounted_returns_match_numpy_loop():
    rewards, _, _, mask = _batch()
    got = np.asarray(P.discounted_returns(jnp.asarray(rewards), jnp.asarray(mask), 0.9))
    np.testing.assert_allclose(got, _np_returns(rewards, LENGTHS, 0.9), rtol=1e-5, atol=1e-6)
    assert np.all(got[mask == 0] == 0.0)
    assert np.all(np.isfinite(got))


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_discounted_returns_vs_estimators_reward_to_go(gamma):
    """The two reward-to-go conventions (docstrings of both functions): processing discounts from
    t, R_t = Σ_{k≥t} γ^{k−t} r_k; estimators folds the discount into the rewards,
    Ψ_t = Σ_{k≥t} γ^k r_k. On prefix masks Ψ_t = γ^t R_t = discounted_returns(γ^t r, γ = 1), and
    the two functions agree when γ = 1 (rewards already discount-folded)."""
    rewards, _, _, mask = _batch(14)
    r, m = jnp.asarray(rewards), jnp.asarray(mask)
    weights = gamma ** np.arange(T)
    psi = np.asarray(est.reward_to_go(r, m, gamma=gamma))
    returns = np.asarray(P.discounted_returns(r, m, gamma))
    np.testing.assert_allclose(psi, weights * returns, rtol=1e-5, atol=1e-6)
    folded = jnp.asarray(np.where(mask > 0, rewards, 0.0) * weights, jnp.float32)
    folded_returns = np.asarray(P.discounted_returns(folded, m, 1.0))
    np.testing.assert_allclose(psi, folded_returns, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(est.reward_to_go(folded, m), folded_returns, rtol=1e-5, atol=1e-6)
    if gamma < 1.0:  # they really are different conventions
        assert np.max(np.abs(psi - returns)) > 1e-2


def test_gae_lambda_one_equals_returns_minus_values():
    rewards, values, _, mask = _batch(1)
    r, v, m = jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(mask)
    adv = np.asarray(P.gae(r, v, m, gamma=0.99, lam=1.0))
    expected = np.asarray(P.discounted_returns(r, m, 0.99)) - np.where(mask > 0, values, 0.0)
    np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-5)
    assert np.all(adv[mask == 0] == 0.0)


def test_gae_lambda_zero_equals_td_errors():
    rewards, values, _, mask = _batch(2)
    adv = np.asarray(P.gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(mask), gamma=0.9, lam=0.0))
    for i, n in enumerate(LENGTHS):
        next_v = np.append(values[i, 1:n], 0.0)  # value after the last real step is 0
        np.testing.assert_allclose(
            adv[i, :n], rewards[i, :n] + 0.9 * next_v - values[i, :n], rtol=1e-5, atol=1e-6
        )


def test_gae_matches_numpy_loop():
    rewards, values, _, mask = _batch(3)
    adv = P.gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(mask), gamma=0.99, lam=0.95)
    np.testing.assert_allclose(adv, _np_gae(rewards, values, LENGTHS, 0.99, 0.95), rtol=1e-5, atol=1e-5)


@jax.jit
def _all_outputs(rewards, values, obs, mask):
    returns = P.discounted_returns(rewards, mask, 0.99)
    return {
        "returns": returns,
        "gae": P.gae(rewards, values, mask, gamma=0.99, lam=0.95),
        "features": P.linear_feature_baseline_features(obs, mask),
        "linear": P.linear_feature_baseline(obs, returns, mask),
        "linear_time": P.linear_time_baseline(obs, returns, mask),
        "normalized": P.normalize_advantages(values, mask),
    }


def test_padding_garbage_has_no_effect():
    expected = _all_outputs(*_batch(4, garbage=0.0))
    for garbage in (np.nan, np.inf, 1e6):
        outputs = _all_outputs(*_batch(4, garbage=garbage))
        for key, value in outputs.items():
            np.testing.assert_array_equal(value, expected[key], err_msg=f"{key} with {garbage} padding")
            assert np.all(np.isfinite(np.asarray(value)))


def test_features_formula():
    obs = np.array([[[-20.0, 0.5], [3.0, 11.0], [1.0, 1.0]]], np.float32)  # [1, 3, 2]
    mask = np.array([[1.0, 1.0, 0.0]], np.float32)
    feats = np.asarray(P.linear_feature_baseline_features(jnp.asarray(obs), jnp.asarray(mask)))
    assert feats.shape == (1, 3, 2 * 2 + 4)
    o = np.clip(obs[0, :2], -10, 10)
    t = np.arange(2)[:, None] / 100.0
    expected = np.concatenate([o, o**2, t, t**2, t**3, np.ones((2, 1))], axis=1)
    np.testing.assert_allclose(feats[0, :2], expected, rtol=1e-6)
    assert np.all(feats[0, 2] == 0.0)
    time_feats = np.asarray(P.linear_time_baseline_features(jnp.asarray(obs), jnp.asarray(mask)))
    np.testing.assert_allclose(time_feats[0, :2], expected[:, -4:], rtol=1e-6)


def _smooth_batch(seed=5, r=8, t=50, obs_dim=3):
    rng = np.random.default_rng(seed)
    obs = np.cumsum(rng.normal(size=(r, t, obs_dim)) * 0.2, axis=1).astype(np.float32)
    mask = _mask(rng.integers(t // 2, t + 1, size=r), t)
    return jnp.asarray(obs), jnp.asarray(mask)


def test_linear_baseline_recovers_linear_target():
    obs, mask = _smooth_batch()
    feats = P.linear_feature_baseline_features(obs, mask)
    w_true = jnp.asarray(np.random.default_rng(0).normal(size=feats.shape[-1]), jnp.float32)
    target = jnp.einsum("rtf,f->rt", feats, w_true)

    @jax.jit
    def fit_and_predict(obs, target, mask):
        x = P.linear_feature_baseline_features(obs, mask)
        pred = jnp.where(mask > 0, jnp.einsum("rtf,f->rt", x, P.ridge_fit(x, target, mask)), 0.0)
        return pred, P.linear_feature_baseline(obs, target, mask)

    pred, pred_fused = fit_and_predict(obs, target, mask)
    assert float(jnp.max(jnp.abs(pred - target))) < 1e-3 * float(jnp.max(jnp.abs(target)))
    np.testing.assert_allclose(pred_fused, pred, rtol=1e-5, atol=1e-5)


def test_linear_baseline_fits_a_cubic_target():
    obs, mask = _smooth_batch(6)
    o = obs[..., 0]
    t = jnp.arange(obs.shape[1])[None, :] / 10.0
    target = jnp.where(mask > 0, o**3 - 2.0 * o * t + t**3, 0.0)
    real = mask > 0

    def err(pred):
        return float(jnp.sqrt(jnp.sum(jnp.where(real, (target - pred) ** 2, 0.0))))

    fit_err = err(jax.jit(P.linear_feature_baseline)(obs, target, mask))
    unfit_err = err(P.zero_baseline(obs, target, mask))
    assert 2.0 * fit_err < unfit_err


def test_ridge_retry_increases_damping_until_finite():
    obs, mask = _smooth_batch(7)
    feats = P.linear_feature_baseline_features(obs, mask)
    target = jnp.sum(obs, -1)
    tried = []

    def fussy_solve(gram, rhs, c):
        jax.debug.callback(lambda c: tried.append(float(c)), c)
        w = P.damped_solve(gram, rhs, c)
        return jnp.where(c < 5e-3, jnp.nan, w)  # NaN for the first three attempts

    w = P.ridge_fit(feats, target, mask, reg_coeff=1e-5, solve=fussy_solve)
    np.testing.assert_allclose(tried, [1e-5, 1e-4, 1e-3, 1e-2], rtol=1e-5)
    np.testing.assert_allclose(w, P.ridge_fit(feats, target, mask, reg_coeff=1e-2), rtol=1e-6)

    w_none = P.ridge_fit(feats, target, mask, solve=lambda g, b, c: jnp.full_like(b, jnp.inf))
    assert np.all(np.asarray(w_none) == 0.0)  # no finite attempt: zero baseline


def _normal_equations(feats, target, mask):
    x = jnp.where(mask[..., None] > 0, feats, 0.0).reshape(-1, feats.shape[-1])
    y = jnp.where(mask > 0, target, 0.0).reshape(-1)
    return x.T @ x, x.T @ y


def test_ridge_retry_on_a_numerically_singular_system():
    # two identical large features: G + 1e-5·I is exactly singular in float32, the retry fixes it
    col = jnp.full((1, 20, 1), 100.0)
    feats = jnp.concatenate([col, col, jnp.linspace(0.0, 1.0, 20)[None, :, None]], axis=-1)
    mask = jnp.ones((1, 20))
    target = 3.0 * feats[..., 0] + feats[..., 2]
    gram, rhs = _normal_equations(feats, target, mask)
    first_attempt, w = jax.jit(lambda: (P.damped_solve(gram, rhs, 1e-5), P.ridge_fit(feats, target, mask)))()
    assert not np.all(np.isfinite(first_attempt))
    assert np.all(np.isfinite(w))
    np.testing.assert_allclose(jnp.einsum("rtf,f->rt", feats, w), target, rtol=1e-3)


def test_damped_solve_matches_float64_ridge():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(200, 6)) * np.array([1e-2, 1.0, 10.0, 100.0, 1.0, 1.0])
    y = rng.normal(size=200)
    expected = np.linalg.solve(x.T @ x + 0.1 * np.eye(6), x.T @ y)
    got = P.damped_solve(jnp.asarray(x.T @ x, jnp.float32), jnp.asarray(x.T @ y, jnp.float32), 0.1)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


def test_zero_and_registry():
    _, values, obs, mask = _batch(9)
    assert set(P.BASELINES) >= {"linear", "zero", "linear_time"}
    z = P.BASELINES["zero"](jnp.asarray(obs), jnp.asarray(values), jnp.asarray(mask))
    assert z.shape == (R, T) and np.all(np.asarray(z) == 0.0)


def test_linear_time_baseline_recovers_cubic_in_time():
    obs, mask = _smooth_batch(10)
    t = jnp.broadcast_to(jnp.arange(obs.shape[1])[None, :] / 100.0, mask.shape)
    target = jnp.where(mask > 0, 2.0 - t + 3.0 * t**2 - 0.5 * t**3, 0.0)
    np.testing.assert_allclose(jax.jit(P.linear_time_baseline)(obs, target, mask), target, atol=1e-3)


def test_normalize_advantages():
    _, values, _, mask = _batch(11)
    adv = np.asarray(P.normalize_advantages(jnp.asarray(values * 5.0 + 3.0), jnp.asarray(mask)))
    real = adv[mask > 0]
    np.testing.assert_allclose(real.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(real.std(), 1.0, rtol=1e-5)  # population std
    raw = (values * 5.0 + 3.0)[mask > 0]
    np.testing.assert_allclose(real, (raw - raw.mean()) / (raw.std() + 1e-8), rtol=1e-4, atol=1e-5)
    assert np.all(adv[mask == 0] == 0.0)


def test_standardize_rewards_across_tasks():
    rng = np.random.default_rng(13)
    rewards = rng.normal(size=(3, R, T)).astype(np.float32) + np.array([0.0, 5.0, -2.0])[:, None, None]
    mask = np.stack([_mask(), _mask((3, 3, 12, 5)), _mask((1, 2, 3, 4))])
    rewards[mask == 0] = np.nan
    out = np.asarray(P.standardize_rewards_across_tasks(jnp.asarray(rewards), jnp.asarray(mask)))
    raw = rewards[mask > 0]
    np.testing.assert_allclose(out[mask > 0], (raw - raw.mean()) / (raw.std() + 1e-8), rtol=1e-4, atol=1e-5)
    assert np.all(out[mask == 0] == 0.0)


def _process(obs, rewards, mask):
    returns = P.discounted_returns(rewards, mask, 0.99)
    values = P.linear_feature_baseline(obs, returns, mask)
    return P.normalize_advantages(P.gae(rewards, values, mask, gamma=0.99, lam=1.0), mask)


def test_vmap_over_tasks_and_jit():
    batches = [_batch(20 + i) for i in range(3)]
    rewards, _, obs, mask = (jnp.asarray(np.stack(x)) for x in zip(*batches, strict=True))
    batched = jax.jit(jax.vmap(_process))(obs, rewards, mask)
    assert batched.shape == (3, R, T)
    single = jax.jit(_process)
    for i in range(3):
        np.testing.assert_allclose(batched[i], single(obs[i], rewards[i], mask[i]), rtol=1e-4, atol=1e-4)
    assert np.all(np.isfinite(np.asarray(batched)))


@pytest.mark.parametrize("name", sorted(P.BASELINES))
def test_baselines_vmap_jit(name):
    obs, mask = _smooth_batch(30)
    targets = jnp.sum(obs, -1)
    stack = lambda x: jnp.stack([x, x * 0.5])  # noqa: E731
    out = jax.jit(jax.vmap(P.BASELINES[name]))(stack(obs), stack(targets), jnp.stack([mask, mask]))
    assert out.shape == (2, *mask.shape)
    np.testing.assert_allclose(out[0], jax.jit(P.BASELINES[name])(obs, targets, mask), rtol=1e-4, atol=1e-4)
