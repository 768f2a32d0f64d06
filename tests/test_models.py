"""Dynamics ensembles (adaptrl.models): s' = s + f(s, a) on normalised Δ (thesis §5.2.1, App. B.3),
the rolling early-stopping rule, fitting, the FIFO buffer and the k-step model-bias errors
(docs/model-based.md). Networks and data sets are tiny so the whole file runs in seconds."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptrl.errors import ConfigError
from adaptrl.models import (
    EnsembleParams,
    EnsembleSpec,
    FitSettings,
    Normalization,
    add_transitions,
    buffer_contents,
    empty_buffer,
    fit,
    init_ensemble,
    init_model_state,
    k_step_errors,
    member,
    member_loss,
    next_obs,
    next_obs_all,
    normalization,
    predict_delta,
    rolling_stop,
    soft_bound_logvar,
)
from adaptrl.models.training import _fit_epoch, _splits, minibatch_slots

RNG = np.random.default_rng(0)


def jitted(fn):
    """``fn(spec, …)`` compiled once per spec: op-by-op dispatch is slow on a loaded CPU."""
    return jax.jit(fn, static_argnums=0)


NEXT = jitted(next_obs)
NEXT_ALL = jitted(next_obs_all)
PREDICT = jitted(predict_delta)
LOSS = jitted(member_loss)


TANH = EnsembleSpec(obs_dim=3, act_dim=2, members=2, hidden_sizes=(4, 5), activation="tanh")
SMALL = EnsembleSpec(obs_dim=2, act_dim=1, members=3, hidden_sizes=(16,))
ONE_HIDDEN = EnsembleSpec(obs_dim=2, act_dim=1, members=2, hidden_sizes=(6,))
# (tests share these specs and fit settings, so the jitted functions compile fewer times)


def small_settings(**kw):
    defaults = {"learning_rate": 1e-2, "batch_size": 32, "max_epochs": 40, "persistency": 0.3}
    return FitSettings(**{**defaults, **kw})


def host_member(params, k):
    """Member ``k`` with numpy leaves (no device op per leaf)."""
    return jax.tree_util.tree_map(lambda x: np.asarray(x)[k], params)


def random_norm(spec: EnsembleSpec, rng: np.random.Generator) -> Normalization:
    k, i, o = spec.members, spec.input_dim, spec.obs_dim
    return Normalization(
        input_mean=rng.normal(size=(k, i)).astype(np.float32),
        input_std=rng.uniform(0.5, 2.0, (k, i)).astype(np.float32),
        delta_mean=rng.normal(size=(k, o)).astype(np.float32),
        delta_std=rng.uniform(0.5, 2.0, (k, o)).astype(np.float32),
        obs_low=np.full((k, o), -np.inf, np.float32), obs_high=np.full((k, o), np.inf, np.float32),
    )


def perturbed(params: EnsembleParams, rng: np.random.Generator) -> EnsembleParams:
    """Non-zero biases everywhere, so the hand computation checks them too."""
    net = jax.tree_util.tree_map(lambda x: x + 0.1 * rng.normal(size=x.shape).astype(np.float32), params.net)
    return params._replace(net=net)


def numpy_forward(layers, x, act):
    """The MLP by hand: ``layers`` = [(W, b), …]; activation on all but the last."""
    for i, (w, b) in enumerate(layers):
        x = x @ w + b
        if i < len(layers) - 1:
            x = act(x)
    return x


def dense_layers(net_k, n_hidden, weight_norm=False):
    p = net_k["params"]
    out = []
    for name in [f"hidden_{i}" for i in range(n_hidden)] + ["output"]:
        if weight_norm:
            v, g = np.asarray(p[name]["v"], np.float64), np.asarray(p[name]["g"], np.float64)
            w = g[None, :] * v / np.sqrt((v ** 2).sum(0, keepdims=True))
        else:
            w = np.asarray(p[name]["kernel"], np.float64)
        out.append((w, np.asarray(p[name]["bias"], np.float64)))
    return out


def test_next_obs_is_state_plus_denormalised_delta_by_hand():
    spec = TANH
    params = perturbed(init_ensemble(spec, jax.random.PRNGKey(0)), RNG)
    params = params._replace(norm=random_norm(spec, RNG))
    obs = RNG.normal(size=(2, 3, 3)).astype(np.float32)  # a [2, 3] batch
    act = RNG.normal(size=(2, 3, 2)).astype(np.float32)

    @jax.jit
    def predictions(params):
        # member k traced, as the simulator picks members inside jit
        one = jax.vmap(lambda k: next_obs(spec, member(params, k), obs, act))(jnp.arange(2))
        return next_obs_all(spec, params, obs, act), one, predict_delta(spec, member(params, 0), obs, act)

    every, one, (mean0, logvar0) = predictions(params)
    assert every.shape == (2, 2, 3, 3) and logvar0 is None
    for k in range(2):
        norm = jax.tree_util.tree_map(lambda x, k=k: np.asarray(x[k], np.float64), params.norm)
        x_hat = (np.concatenate([obs, act], -1) - norm.input_mean) / norm.input_std
        delta_hat = numpy_forward(dense_layers(host_member(params, k).net, 2), x_hat, np.tanh)
        expected = obs + norm.delta_mean + norm.delta_std * delta_hat
        np.testing.assert_allclose(every[k], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(one[k], expected, rtol=1e-5, atol=1e-5)
        if k == 0:
            np.testing.assert_allclose(mean0, expected - obs, rtol=1e-5, atol=1e-5)
    assert not np.allclose(every[0], every[1])


def test_members_differ_only_in_init_and_init_is_glorot_with_identity_norm():
    spec = SMALL
    params = init_ensemble(spec, jax.random.PRNGKey(1))
    kernel = np.asarray(params.net["params"]["hidden_0"]["kernel"])
    assert kernel.shape == (3, 3, 16)
    limit = math.sqrt(6 / (3 + 16))
    assert np.abs(kernel).max() <= limit
    assert not np.allclose(kernel[0], kernel[1]) and not np.allclose(kernel[1], kernel[2])
    np.testing.assert_array_equal(params.net["params"]["hidden_0"]["bias"], 0)
    np.testing.assert_array_equal(params.norm.input_std, np.ones((3, 3)))
    np.testing.assert_array_equal(params.norm.obs_low, np.full((3, 2), -np.inf))
    same = init_ensemble(spec, jax.random.PRNGKey(1))
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, same)


def test_weight_norm_kernel_is_g_v_over_column_norm():
    spec = EnsembleSpec(obs_dim=2, act_dim=1, members=2, hidden_sizes=(6,), weight_norm=True)
    params = init_ensemble(spec, jax.random.PRNGKey(2))
    layer = params.net["params"]["hidden_0"]
    assert set(layer) == {"v", "g", "bias"}
    # g starts at ‖v‖ per column, so the initial kernel is the Glorot draw v itself
    np.testing.assert_allclose(layer["g"], np.linalg.norm(np.asarray(layer["v"]), axis=1), rtol=1e-6)
    params = perturbed(params, RNG)
    one = host_member(params, 1)
    obs, act = RNG.normal(size=(5, 2)).astype(np.float32), RNG.normal(size=(5, 1)).astype(np.float32)
    expected = obs + numpy_forward(dense_layers(one.net, 1, weight_norm=True), np.concatenate([obs, act], -1),
                                   lambda x: np.maximum(x, 0))
    np.testing.assert_allclose(NEXT(spec, one, obs, act), expected, rtol=1e-5, atol=1e-5)
    # invariance to the scale of each column of v (only its direction matters)
    scaled = jax.tree_util.tree_map(lambda x: x, one.net)
    column_scale = np.arange(1.0, 7.0, dtype=np.float32)
    scaled["params"]["hidden_0"]["v"] = one.net["params"]["hidden_0"]["v"] * column_scale
    np.testing.assert_allclose(NEXT(spec, one._replace(net=scaled), obs, act), expected, rtol=1e-5, atol=1e-5)


def test_normalization_statistics_and_floor():
    obs = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]], np.float32)
    act = np.array([[1.0], [1.0], [1.0]], np.float32)
    nxt = obs + np.array([[1.0, 0.0], [1.0, 0.0], [4.0, -3.0]], np.float32)
    norm = normalization(obs, act, nxt, eps=1e-3)
    np.testing.assert_allclose(norm.input_mean, [2.0, 1.0, 1.0])
    np.testing.assert_allclose(norm.input_std, [math.sqrt(8 / 3), 1e-3, 1e-3], rtol=1e-6)  # floored
    np.testing.assert_allclose(norm.delta_mean, [2.0, -1.0])
    np.testing.assert_allclose(norm.delta_std, [math.sqrt(2.0), math.sqrt(2.0)], rtol=1e-6)
    np.testing.assert_allclose(norm.obs_low, [0.0, -2.0])
    np.testing.assert_allclose(norm.obs_high, [8.0, 1.0])


def test_probabilistic_soft_bounds_loss_by_hand_and_sampling():
    spec = EnsembleSpec(obs_dim=2, act_dim=1, members=2, hidden_sizes=(3,), kind="probabilistic")
    params = init_ensemble(spec, jax.random.PRNGKey(3))
    bounds = params.net["params"]
    np.testing.assert_array_equal(bounds["max_logvar"], np.full((2, 2), 0.5))
    np.testing.assert_array_equal(bounds["min_logvar"], np.full((2, 2), -10.0))

    raw = jnp.linspace(-40.0, 40.0, 2001)
    bounded = np.asarray(jax.jit(soft_bound_logvar)(raw, -10.0, 0.5))
    # within (min, max + softplus(min − max)), max + 2.8e-5 here: the second (lower) bound lifts values
    # just under max a little; float32 rounds the far lower tail onto min
    top = 0.5 + math.log1p(math.exp(-10.5))
    assert bounded.min() >= -10.0 and bounded.max() < top + 1e-6 and bounded.max() > 0.5
    assert bounded[np.asarray(raw) >= -15].min() > -10.0
    assert bounded[0] < -9.99 and np.all(np.diff(bounded) >= 0)
    np.testing.assert_allclose(bounded[np.abs(np.asarray(raw) + 4) < 1e-3], -4.0, atol=0.02)  # inside: ≈ raw

    params = perturbed(params, RNG)
    params = params._replace(norm=random_norm(spec, RNG))
    one = host_member(params, 0)
    obs, act = RNG.normal(size=(4, 2)).astype(np.float32), RNG.normal(size=(4, 1)).astype(np.float32)
    nxt = RNG.normal(size=(4, 2)).astype(np.float32)
    weights = np.array([1.0, 0.0, 1.0, 1.0], np.float32)

    p = {k: np.asarray(v, np.float64) for k, v in one.net["params"].items() if k.endswith("logvar")}
    norm = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), one.norm)
    x_hat = (np.concatenate([obs, act], -1) - norm.input_mean) / norm.input_std
    out = numpy_forward(dense_layers(one.net, 1), x_hat, lambda x: np.maximum(x, 0))
    mu_hat, lv = out[:, :2], out[:, 2:]

    def softplus(x):
        return np.log1p(np.exp(x))

    lv = p["max_logvar"] - softplus(p["max_logvar"] - lv)
    lv = p["min_logvar"] + softplus(lv - p["min_logvar"])
    target = (nxt - obs - norm.delta_mean) / norm.delta_std
    per_row = ((target - mu_hat) ** 2 * np.exp(-lv) + lv).mean(1)
    reg = 0.01 * p["max_logvar"].mean() - 0.01 * p["min_logvar"].mean()
    np.testing.assert_allclose(LOSS(spec, one, obs, act, nxt), per_row.mean() + reg, rtol=1e-5)
    np.testing.assert_allclose(LOSS(spec, one, obs, act, nxt, weights),
                               per_row[weights > 0].mean() + reg, rtol=1e-5)

    mean, logvar = PREDICT(spec, one, obs, act)
    np.testing.assert_allclose(logvar, lv + np.log(norm.delta_std ** 2), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(NEXT(spec, one, obs, act), obs + mean, rtol=1e-6)
    keys = jax.random.split(jax.random.PRNGKey(4), 20000)
    sample = jax.jit(jax.vmap(lambda k: next_obs(spec, one, obs[:1], act[:1], k)))
    samples = np.asarray(sample(keys))[:, 0]
    std = np.exp(0.5 * np.asarray(logvar[0]))
    np.testing.assert_allclose(samples.mean(0), obs[0] + mean[0], atol=4 * std.max() / math.sqrt(20000))
    np.testing.assert_allclose(samples.std(0), std, rtol=0.03)  # the std, not exp(logvar)


def test_deterministic_loss_is_normalised_mse_with_weights():
    spec = TANH
    params = perturbed(init_ensemble(spec, jax.random.PRNGKey(5)), RNG)
    params = params._replace(norm=random_norm(spec, RNG))
    one = host_member(params, 1)
    obs, act = RNG.normal(size=(3, 3)).astype(np.float32), RNG.normal(size=(3, 2)).astype(np.float32)
    nxt = RNG.normal(size=(3, 3)).astype(np.float32)
    mean, _ = PREDICT(spec, one, obs, act)
    std = np.asarray(one.norm.delta_std)
    per_row = (((nxt - obs - np.asarray(mean)) / std) ** 2).mean(1)
    np.testing.assert_allclose(LOSS(spec, one, obs, act, nxt), per_row.mean(), rtol=1e-5)
    np.testing.assert_allclose(LOSS(spec, one, obs, act, nxt, np.array([0.0, 1.0, 1.0], np.float32)),
                               per_row[1:].mean(), rtol=1e-5)


@pytest.mark.parametrize(("persistency", "stop_a", "stop_b"), [(0.5, 5, 6), (0.9, 8, 7)])
def test_rolling_stop_on_a_synthetic_sequence(persistency, stop_a, stop_b):
    """By hand, p = 0.5, member A (L = 1, .8, .7, .75, .9, …): epoch 1 avg = 1.5, prev = 2,
    avg' = .75 + .5 = 1.25; then 1.025, .8625, .80625 (L = .75 < .8625 still lowers it), and at
    epoch 5 avg' = .403125 + .45 = .853125 > .80625: stop. p = 0.9: 1.45, 1.385, 1.3165, 1.25985,
    1.223865, 1.2014785, 1.2013307 (L = 1.2 just below the average), then 1.2811976 at epoch 8.
    Member B (negative losses −1, −1.2, −1.1, −1.3, −1.25, −1, −.5): p = .5: avg = −2/3, prev = −.5,
    −.8333, −1.0167, −1.0583, −1.1792, −1.2146, then −1.1073 at epoch 6; p = .9: −.7, −.75, −.785,
    −.8365, −.87785, −.890065, then −.851058 at epoch 7."""
    seq = np.array([[1.0, 0.8, 0.7, 0.75, 0.9, 1.0, 1.2, 2.0, 3.0, 4.0],
                    [-1.0, -1.2, -1.1, -1.3, -1.25, -1.0, -0.5, 0.0, 1.0, 2.0]]).T
    avg = prev = np.zeros(2)
    stopped_at = [None, None]
    for epoch, loss in enumerate(seq, start=1):
        avg, prev, stop = rolling_stop(avg, prev, loss, persistency, epoch == 1)
        for k in range(2):
            if bool(stop[k]) and stopped_at[k] is None:
                stopped_at[k] = epoch
    assert stopped_at == [stop_a, stop_b]


def linear_data(n, rng, obs_dim=3, act_dim=2):
    a_mat = np.eye(obs_dim) + 0.1 * rng.normal(size=(obs_dim, obs_dim))
    b_mat = 0.5 * rng.normal(size=(obs_dim, act_dim))
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    act = rng.uniform(-1, 1, (n, act_dim)).astype(np.float32)
    return obs, act, (obs @ a_mat.T + act @ b_mat.T).astype(np.float32), (a_mat, b_mat)


def test_fit_recovers_linear_dynamics():
    rng = np.random.default_rng(6)
    spec = SMALL
    settings = small_settings(max_epochs=200, persistency=0.9)
    obs, act, nxt, (a_mat, b_mat) = linear_data(200, rng, obs_dim=2, act_dim=1)
    state = init_model_state(spec, settings, jax.random.PRNGKey(7))
    state, report = fit(spec, settings, state, obs, act, nxt, jax.random.PRNGKey(8))
    test_obs = rng.normal(size=(500, 2)).astype(np.float32)
    test_act = rng.uniform(-1, 1, (500, 1)).astype(np.float32)
    truth = test_obs @ a_mat.T + test_act @ b_mat.T
    pred = np.asarray(NEXT_ALL(spec, state.params, test_obs, test_act))
    relative = ((pred - truth) ** 2).mean(axis=(1, 2)) / (truth - test_obs).var()
    assert np.all(relative < 1e-3), relative
    assert report.epochs.shape == (3,) and np.all(report.epochs >= 20)
    assert report.valid_history.shape == (report.epochs.max(), 3)
    assert np.all(report.valid_loss < 1e-3) and np.all(report.train_loss < 1e-3)
    # per-member statistics from each member's own 80 % split: close to, not equal to, the data's
    full = normalization(obs, act, nxt)
    np.testing.assert_allclose(state.params.norm.input_mean, np.broadcast_to(full.input_mean, (3, 3)),
                               atol=0.2)
    assert not np.allclose(state.params.norm.input_mean[0], state.params.norm.input_mean[1])


def test_shared_split_members_see_the_same_data():
    """Identical initial members, full-batch epochs (24 training rows < 32): with a shared split
    they stay identical (they see the same rows); with per-member splits they diverge. With
    minibatches smaller than the data the shared-split members still diverge (each its own
    minibatch order)."""
    rng = np.random.default_rng(9)
    obs, act, nxt, _ = linear_data(200, rng, obs_dim=2, act_dim=1)
    base = init_model_state(SMALL, small_settings(), jax.random.PRNGKey(10))
    triplets = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x[:1], x.shape), base)

    def fitted(n, **kw):
        settings = small_settings(max_epochs=3, persistency=1.0, **kw)
        state, _ = fit(SMALL, settings, triplets, obs[:n], act[:n], nxt[:n], jax.random.PRNGKey(11))
        return state.params

    def same_members(params):
        leaves = jax.tree_util.tree_leaves(params.net)
        return all(np.allclose(x[0], x[k], rtol=1e-5, atol=1e-6) for x in leaves for k in (1, 2))

    shared_full = fitted(30, shared_split=True)
    jax.tree_util.tree_map(lambda x: np.testing.assert_array_equal(x[0], x[1]), shared_full.norm)
    assert same_members(shared_full)
    own_full = fitted(30, shared_split=False)
    assert not np.allclose(own_full.norm.input_mean[0], own_full.norm.input_mean[1])
    assert not same_members(own_full)
    shared_mini = fitted(200, shared_split=True)
    jax.tree_util.tree_map(lambda x: np.testing.assert_array_equal(x[0], x[2]), shared_mini.norm)
    assert not same_members(shared_mini)


def test_splits_per_member_shared_and_bootstrap():
    n = 50
    own, own_valid = _splits(SMALL, small_settings(), n, np.random.default_rng(0))
    shared, shared_valid = _splits(SMALL, small_settings(shared_split=True), n, np.random.default_rng(0))
    boot, boot_valid = _splits(SMALL, small_settings(bootstrap=True), n, np.random.default_rng(0))
    for train, valid in [*zip(own, own_valid, strict=True), *zip(shared, shared_valid, strict=True)]:
        assert (len(train), len(valid)) == (40, 10)
        assert sorted(np.concatenate([train, valid]).tolist()) == list(range(n))  # a partition
    assert not np.array_equal(np.sort(own_valid[0]), np.sort(own_valid[1]))
    assert all(np.array_equal(shared_valid[0], v) and np.array_equal(shared[0], t)
               for t, v in zip(shared, shared_valid, strict=True))
    for train, valid in zip(boot, boot_valid, strict=True):  # resampled with replacement, same size
        assert len(train) == 40 and len(np.unique(train)) < 40
        assert not set(train.tolist()) & set(valid.tolist())


def output_kernel(state):
    return np.asarray(state.params.net["params"]["output"]["kernel"])


def test_fit_is_deterministic_in_the_key_and_freezes_stopped_members():
    rng = np.random.default_rng(12)
    spec = SMALL
    obs = rng.normal(size=(200, 2)).astype(np.float32)
    act = rng.normal(size=(200, 1)).astype(np.float32)
    nxt = rng.normal(size=(200, 2)).astype(np.float32)  # noise: validation soon gets worse
    settings = small_settings()
    state = init_model_state(spec, settings, jax.random.PRNGKey(13))
    a, report = fit(spec, settings, state, obs, act, nxt, jax.random.PRNGKey(14))
    b, _ = fit(spec, settings, state, obs, act, nxt, jax.random.PRNGKey(14))
    c, _ = fit(spec, settings, state, obs, act, nxt, jax.random.PRNGKey(15))
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
    assert not np.allclose(output_kernel(a), output_kernel(c))
    assert report.stopped.any() and len(set(report.epochs.tolist())) > 1, report.epochs
    # the rule replayed on the recorded validation losses gives the recorded stop epochs
    for k in range(3):
        avg = prev = 0.0
        for e, loss in enumerate(report.valid_history[:, k], start=1):
            avg, prev, stop = rolling_stop(avg, prev, loss, settings.persistency, e == 1)
            if stop:
                break
        assert e == report.epochs[k]
    # a member that stopped after e epochs equals the same fit cut at e epochs: frozen since
    first = int(np.argmin(report.epochs))
    cut = small_settings(max_epochs=int(report.epochs[first]))
    short, _ = fit(spec, cut, state, obs, act, nxt, jax.random.PRNGKey(14))
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_array_equal(x[first], y[first]), a, short)
    later = int(np.argmax(report.epochs))
    assert not np.allclose(output_kernel(a)[later], output_kernel(short)[later])
    # one Adam step per real minibatch of the member's 160 training rows (ceil(160/32) = 5; the
    # epoch's padded slots take none), and none after the member stopped
    adam_steps = np.asarray(a.opt_state[0].count)
    np.testing.assert_array_equal(adam_steps, report.epochs * math.ceil(160 / settings.batch_size))


def test_epoch_function_compiles_once_per_power_of_two_as_data_grows():
    rng = np.random.default_rng(16)
    spec = EnsembleSpec(obs_dim=2, act_dim=1, members=2, hidden_sizes=(3,))  # unique to this test
    settings = FitSettings(batch_size=16, max_epochs=1)
    obs, act, nxt, _ = linear_data(120, rng, obs_dim=2, act_dim=1)
    state = init_model_state(spec, settings, jax.random.PRNGKey(17))
    before = _fit_epoch._cache_size()
    sizes = range(20, 121, 10)
    for i, n in enumerate(sizes):
        state, _ = fit(spec, settings, state, obs[:n], act[:n], nxt[:n], jax.random.PRNGKey(i))
    compiles = _fit_epoch._cache_size() - before
    assert compiles == len({minibatch_slots(n, 16) for n in sizes}) == 3  # 2, 4, 8 slots for 11 sizes
    assert compiles <= math.ceil(math.log2(120 / 16)) + 1


def test_fifo_buffer_order_eviction_and_overflow():
    def rows(values):
        values = np.asarray(values, np.float32)
        return values[:, None].repeat(2, 1), -values[:, None], values[:, None].repeat(2, 1) + 0.5

    empty = empty_buffer(4, 2, 1)
    assert empty.obs.shape == (4, 2) and empty.obs.dtype == np.float32
    assert empty.size.shape == () and empty.size.dtype == np.int64
    one = add_transitions(empty, *rows([0, 1, 2]))
    assert int(empty.size) == 0 and np.all(empty.obs == 0)  # the argument is not mutated
    np.testing.assert_array_equal(buffer_contents(one)[0][:, 0], [0, 1, 2])
    two = add_transitions(one, *rows([3, 4, 5]))
    o, a, n = buffer_contents(two)
    np.testing.assert_array_equal(o[:, 0], [2, 3, 4, 5])  # 0 and 1 evicted, oldest first
    np.testing.assert_array_equal(a[:, 0], [-2, -3, -4, -5])
    np.testing.assert_array_equal(n[:, 1], [2.5, 3.5, 4.5, 5.5])
    assert (int(two.size), int(two.head)) == (4, 2)
    np.testing.assert_array_equal(buffer_contents(one)[0][:, 0], [0, 1, 2])
    big = add_transitions(two, *rows(range(6, 16)))  # more than the capacity: the newest 4
    np.testing.assert_array_equal(buffer_contents(big)[0][:, 0], [12, 13, 14, 15])
    assert (int(big.size), int(big.head)) == (4, 0)
    after = add_transitions(big, *rows([16]))
    np.testing.assert_array_equal(buffer_contents(after)[0][:, 0], [13, 14, 15, 16])
    unchanged = add_transitions(after, *rows([]))
    np.testing.assert_array_equal(buffer_contents(unchanged)[0][:, 0], [13, 14, 15, 16])


def exact_linear_member(spec: EnsembleSpec, m: np.ndarray) -> EnsembleParams:
    """A ReLU net computing Δ = M·x exactly: hidden = [relu(x), relu(−x)], out = M·(h⁺ − h⁻)."""
    d = spec.input_dim
    eye = np.eye(d, dtype=np.float32)
    net = {"params": {
        "hidden_0": {"kernel": np.concatenate([eye, -eye], 1), "bias": np.zeros(2 * d, np.float32)},
        "output": {"kernel": np.concatenate([m.T, -m.T], 0).astype(np.float32),
                   "bias": np.zeros(spec.obs_dim, np.float32)},
    }}
    i, o = spec.input_dim, spec.obs_dim
    zeros, ones = np.zeros(i + o, np.float32), np.ones(i + o, np.float32)
    norm = Normalization(zeros[:i], ones[:i], zeros[:o], ones[:o], -np.inf * ones[:o], np.inf * ones[:o])
    return EnsembleParams(net, norm)


def stacked(*members):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *members)


def test_k_step_errors_zero_for_an_exact_model():
    rng = np.random.default_rng(18)
    spec = ONE_HIDDEN
    m = 0.3 * rng.normal(size=(2, 3))  # s' = s + M·[s; a]
    params = stacked(exact_linear_member(spec, m), exact_linear_member(spec, m))
    n, t = 3, 6
    obs = np.zeros((n, t + 1, 2), np.float32)
    obs[:, 0] = rng.normal(size=(n, 2))
    actions = rng.uniform(-1, 1, (n, t, 1)).astype(np.float32)
    for i in range(t):
        obs[:, i + 1] = obs[:, i] + np.concatenate([obs[:, i], actions[:, i]], -1) @ m.T
    mask = np.ones((n, t), np.float32)
    mask[2, 4:] = 0
    errors = k_step_errors(spec, params, obs[:, :t], actions, mask, 4, final_observations=obs[:, t])
    assert errors.shape == (4,)
    assert np.all(errors < 1e-10), errors
    # a wrong member makes it non-zero, growing with the horizon
    wrong = stacked(exact_linear_member(spec, m), exact_linear_member(spec, m + 0.1))
    errors = k_step_errors(spec, wrong, obs[:, :t], actions, mask, 4, final_observations=obs[:, t])
    assert np.all(errors > 1e-6) and np.all(np.diff(errors) > 0)


def test_k_step_errors_by_hand_for_two_steps():
    """A drift model ŝ' = ŝ + c_k (zero output layer, μ_Δ = c_k) on random "real" states: the
    j-step prediction from s_t is s_t + j·c_k. Trajectory 0 is real for 4 steps and has a final
    state; trajectory 1 is real for 3 steps (mask 1, 1, 1, 0), so its s_3 is not known."""
    rng = np.random.default_rng(19)
    spec = ONE_HIDDEN
    params = init_ensemble(spec, jax.random.PRNGKey(20))
    params.net["params"]["output"] = {"kernel": jnp.zeros((2, 6, 2)), "bias": jnp.zeros((2, 2))}
    drift = np.array([[0.5, -1.0], [2.0, 0.25]], np.float32)
    params = params._replace(norm=params.norm._replace(delta_mean=jnp.asarray(drift)))
    obs = rng.normal(size=(2, 4, 2)).astype(np.float32)
    final = rng.normal(size=(2, 2)).astype(np.float32)
    actions = rng.normal(size=(2, 4, 1)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], np.float32)
    real = np.concatenate([obs, final[:, None]], 1)
    windows = {1: [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)],
               2: [(0, 0), (0, 1), (0, 2), (1, 0)]}
    errors = k_step_errors(spec, params, obs, actions, mask, 2, final_observations=final)
    for j in (1, 2):
        sq = [(obs[n, t] + j * drift[k] - real[n, t + j]) ** 2 for k in range(2) for n, t in windows[j]]
        np.testing.assert_allclose(errors[j - 1], np.mean(sq), rtol=1e-5)
    # without the final state the windows ending at T disappear
    no_final = k_step_errors(spec, params, obs, actions, mask, 2)
    sq = [(obs[n, t] + drift[k] - obs[n, t + 1]) ** 2 for k in range(2) for n, t in [(0, 0), (0, 1), (0, 2),
                                                                                    (1, 0), (1, 1)]]
    np.testing.assert_allclose(no_final[0], np.mean(sq), rtol=1e-5)


@pytest.mark.parametrize(("build", "message"), [
    (lambda: EnsembleSpec(3, 2, kind="gaussian"),
     "unknown ensemble kind 'gaussian'.*deterministic, probabilistic"),
    (lambda: EnsembleSpec(3, 2, activation="relux"), "Did you mean 'relu'"),
    (lambda: EnsembleSpec(3, 2, members=0), "members \\(ensemble size\\) must be a positive integer, got 0"),
    (lambda: EnsembleSpec(3, 2, hidden_sizes=(64, 0)), "every hidden size must be a positive integer"),
    (lambda: EnsembleSpec(0, 2), "obs_dim must be a positive integer"),
    (lambda: FitSettings(valid_split=1.0), "valid_split must be a fraction strictly between 0 and 1"),
    (lambda: FitSettings(batch_size=0), "batch_size must be a positive integer"),
    (lambda: FitSettings(persistency=1.5), "persistency must be in \\[0, 1\\]"),
    (lambda: empty_buffer(0, 2, 1), "buffer capacity must be a positive integer"),
])
def test_bad_settings_raise_config_error(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_bad_shapes_raise_config_error():
    spec = TANH
    state = init_model_state(spec, FitSettings(), jax.random.PRNGKey(0))
    one = host_member(state.params, 0)
    with pytest.raises(ConfigError, match=r"obs \[\.\.\., 3\] and action \[\.\.\., 2\].*\(4, 2\)"):
        predict_delta(spec, one, np.zeros((4, 2)), np.zeros((4, 2)))
    with pytest.raises(ConfigError, match=r"fit needs obs \[N, 3\], act \[N, 2\]"):
        fit(spec, FitSettings(), state, np.zeros((10, 3)), np.zeros((9, 2)), np.zeros((10, 3)),
            jax.random.PRNGKey(0))
    with pytest.raises(ConfigError, match="the train state does not belong to this spec"):
        fit(SMALL, FitSettings(), state, np.zeros((10, 2)), np.zeros((10, 1)), np.zeros((10, 2)),
            jax.random.PRNGKey(0))
    with pytest.raises(ConfigError, match="at least one training and one validation transition"):
        fit(spec, FitSettings(), state, np.zeros((1, 3)), np.zeros((1, 2)), np.zeros((1, 3)),
            jax.random.PRNGKey(0))
    with pytest.raises(ConfigError, match="weights must have the batch shape"):
        member_loss(spec, one, np.zeros((4, 3)), np.zeros((4, 2)), np.zeros((4, 3)), np.ones(3))
    with pytest.raises(ConfigError, match=r"add_transitions needs obs \[n, 3\]"):
        add_transitions(empty_buffer(5, 3, 2), np.zeros(3), np.zeros(2), np.zeros(3))
    with pytest.raises(ConfigError, match=r"actions must be \[2, 4, 2\] and mask \[2, 4\]"):
        k_step_errors(spec, state.params, np.zeros((2, 4, 3)), np.zeros((2, 4, 2)), np.ones((2, 5)), 2)
    with pytest.raises(ConfigError, match="k \\(prediction steps\\) must be a positive integer"):
        k_step_errors(spec, state.params, np.zeros((2, 4, 3)), np.zeros((2, 4, 2)), np.ones((2, 4)), 0)
