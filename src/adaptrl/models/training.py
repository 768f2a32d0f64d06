"""Fitting a dynamics ensemble: per-member splits and normalisation, Adam, rolling early stopping.

One :func:`fit` call (thesis App. B.3; docs/model-based.md):

1. every member draws its own random train/validation split of all the data (MB-MPO), or all
   members share one (``shared_split``, ME-TRPO); with ``bootstrap`` a member's training split is
   resampled with replacement once per call;
2. every member's :class:`~adaptrl.models.ensemble.Normalization` is recomputed from its own
   training rows (its bootstrap resample with ``bootstrap``; a shared split without bootstrap →
   identical statistics); the network weights warm-start;
3. epochs: each member shuffles its training rows (its own permutation every epoch) and takes one
   Adam step per minibatch; one epoch of all members is **one jitted call** (a loop over
   minibatches, ``vmap`` over members);
4. after each epoch, the validation loss per member feeds :func:`rolling_stop`; a stopped member's
   parameters and Adam state are frozen (the epoch trains every member and restores the stopped
   ones at its end). The fit ends when all members stopped or at ``max_epochs``.

Padding: the data and the per-member index lists are padded to ``S·batch_size`` rows, where ``S``
is the number of minibatches of the whole data set rounded up to a power of two, with 0/1 row
weights. The epoch function therefore compiles once per power of two, O(log N) times while the
buffer grows. The epoch loops over the real minibatches only (a ``fori_loop`` with the traced
count: no Adam step in a padded slot, so the result equals the unpadded loop, the last real
minibatch being a partial one).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from adaptrl.errors import ConfigError, require_positive_int
from adaptrl.models.ensemble import (
    EnsembleParams,
    EnsembleSpec,
    Normalization,
    init_ensemble,
    member_loss,
    normalization,
)


def _is_number(x: object) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


@dataclass(frozen=True)
class FitSettings:
    """How :func:`fit` trains (defaults: MB-MPO, thesis App. B.3; docs/model-based.md).

    ``persistency`` is the rolling-average weight p of :func:`rolling_stop` (thesis B.3: 0.95;
    the original MB-MPO code used 0.99)."""

    learning_rate: float = 1e-3
    batch_size: int = 500
    max_epochs: int = 500
    valid_split: float = 0.2
    persistency: float = 0.95
    bootstrap: bool = False
    shared_split: bool = False

    def __post_init__(self):
        if not (_is_number(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"learning_rate must be a number > 0, got {self.learning_rate!r}.")
        object.__setattr__(self, "batch_size", require_positive_int("batch_size", self.batch_size))
        object.__setattr__(self, "max_epochs", require_positive_int("max_epochs", self.max_epochs))
        if not (_is_number(self.valid_split) and 0 < self.valid_split < 1):
            raise ConfigError(f"valid_split must be a fraction strictly between 0 and 1, "
                              f"got {self.valid_split!r}.")
        if not (_is_number(self.persistency) and 0 <= self.persistency <= 1):
            raise ConfigError(f"persistency must be in [0, 1], got {self.persistency!r}.")


class ModelTrainState(NamedTuple):
    """The ensemble's parameters and its Adam state (stacked per member)."""

    params: EnsembleParams
    opt_state: Any


class FitReport(NamedTuple):
    """What one :func:`fit` did, per member k (numpy).

    ``train_loss [K]``: the mean minibatch loss of the member's last trained epoch;
    ``valid_loss [K]``: its validation loss at its stop (or at the last epoch); ``epochs [K]``:
    epochs trained; ``stopped [K]``: stopped early (not by ``max_epochs``); ``valid_history`` and
    ``train_history [E, K]``: per epoch run (a stopped member's entries stay at its stop values)."""

    train_loss: np.ndarray
    valid_loss: np.ndarray
    epochs: np.ndarray
    stopped: np.ndarray
    valid_history: np.ndarray
    train_history: np.ndarray


def _optimizer(learning_rate: float) -> optax.GradientTransformation:
    return optax.adam(learning_rate)


@partial(jax.jit, static_argnames="learning_rate")
def _init_opt_state(net: Any, learning_rate: float) -> Any:
    return jax.vmap(_optimizer(learning_rate).init)(net)


def init_model_state(spec: EnsembleSpec, settings: FitSettings, key: jax.Array) -> ModelTrainState:
    """A fresh ensemble (:func:`~adaptrl.models.ensemble.init_ensemble`) and fresh Adam states."""
    params = init_ensemble(spec, key)
    return ModelTrainState(params, _init_opt_state(params.net, float(settings.learning_rate)))


def rolling_stop(avg: Any, prev: Any, valid_loss: Any, persistency: Any,
                 first: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One epoch of the rolling-average early-stopping rule, elementwise over members.

    On the first epoch (``first``) ``avg = 1.5·L``, ``prev = 2·L`` (``L/1.5``, ``L/2`` if
    ``L < 0``); then, every epoch including the first::

        avg' = p·avg + (1 − p)·L,   stop = prev < avg',   prev' = avg'

    and it returns ``(avg', prev', stop)``. A member stops when its rolling average went *up*,
    i.e. (for p < 1) when ``L`` exceeds the previous average: thesis §8.4.4's "validation loss
    larger than its exponentially moving average". (Thesis B.3 says "stops as soon as the rolling
    validation loss average decreases"; read "stops decreasing"; docs/model-based.md.) The
    first epoch never stops (``(1 + p/2)·L < 2·L`` for L > 0, ``(1 − p/3)·L < L/2`` for L < 0)."""
    loss = jnp.asarray(valid_loss)
    negative = loss < 0
    avg = jnp.where(first, jnp.where(negative, loss / 1.5, 1.5 * loss), avg)
    prev = jnp.where(first, jnp.where(negative, loss / 2.0, 2.0 * loss), prev)
    new_avg = persistency * avg + (1.0 - persistency) * loss
    return new_avg, new_avg, prev < new_avg


def minibatch_slots(n_rows: int, batch_size: int) -> int:
    """The padded number of minibatches for ``n_rows`` rows: ``⌈n_rows/batch_size⌉`` rounded up
    to a power of two (the only size the epoch function is compiled for)."""
    batches = max(1, math.ceil(n_rows / batch_size))
    return 1 << (batches - 1).bit_length()


def _where_members(flag: jax.Array, new: Any, old: Any) -> Any:
    """Member k's leaves from ``new`` where ``flag[k]``, else from ``old`` (leading member axis)."""
    return jax.tree_util.tree_map(
        lambda n, o: jnp.where(flag.reshape(flag.shape + (1,) * (n.ndim - 1)), n, o), new, old)


@partial(jax.jit, static_argnames=("spec", "batch_size", "learning_rate"))
def _fit_epoch(spec: EnsembleSpec, batch_size: int, learning_rate: float, net: Any, opt_state: Any,
               norm: Normalization, data: tuple[jax.Array, jax.Array, jax.Array], train_index: jax.Array,
               train_weight: jax.Array, valid_index: jax.Array, valid_weight: jax.Array,
               n_train_batches: jax.Array, n_valid_batches: jax.Array, active: jax.Array,
               avg: jax.Array, prev: jax.Array, first: jax.Array, persistency: jax.Array,
               key: jax.Array, epoch: jax.Array):
    """One epoch of every member: shuffle, Adam over the minibatches, validation, stopping rule.

    ``train_index``/``valid_index [K, S·B]`` are row numbers into ``data`` (padding: weight 0)."""
    opt = _optimizer(learning_rate)
    k_members, rows = train_index.shape
    slots = rows // batch_size
    obs, act, nxt = data

    def loss_sums(net_k, norm_k, idx, w):
        loss = member_loss(spec, EnsembleParams(net_k, norm_k), obs[idx], act[idx], nxt[idx], w)
        return loss * w.sum(), w.sum()

    # each member's permutation puts its real rows first in random order, padding last
    keys = jax.random.split(jax.random.fold_in(key, epoch), k_members)
    noise = jax.vmap(lambda kk: jax.random.uniform(kk, (rows,)))(keys)
    order = jnp.argsort(jnp.where(train_weight > 0, noise, 2.0), axis=1)
    perm_index = jnp.take_along_axis(train_index, order, axis=1).reshape(k_members, slots, batch_size)
    perm_weight = jnp.take_along_axis(train_weight, order, axis=1).reshape(k_members, slots, batch_size)

    def member_step(net_k, opt_k, norm_k, idx, w):
        def loss_fn(p):
            return member_loss(spec, EnsembleParams(p, norm_k), obs[idx], act[idx], nxt[idx], w)

        loss, grads = jax.value_and_grad(loss_fn)(net_k)
        updates, new_opt = opt.update(grads, opt_k, net_k)
        return optax.apply_updates(net_k, updates), new_opt, loss * w.sum(), w.sum()

    def train_slot(slot, carry):
        net_c, opt_c, loss_sum, w_sum = carry
        new_net, new_opt, slot_loss, slot_w = jax.vmap(member_step)(
            net_c, opt_c, norm, perm_index[:, slot], perm_weight[:, slot])
        return new_net, new_opt, loss_sum + slot_loss, w_sum + slot_w

    # a loop over the real minibatches only (a while loop: no per-slot lax.cond, which copied the
    # whole carry); stopped members train too and are restored below, once per epoch instead of
    # a select per step: the same result, since ``active`` is constant within an epoch
    zeros = jnp.zeros(k_members)
    trained_net, trained_opt, train_sums, train_counts = jax.lax.fori_loop(
        0, n_train_batches, train_slot, (net, opt_state, zeros, zeros))
    net, opt_state = _where_members(active, trained_net, net), _where_members(active, trained_opt, opt_state)
    train_loss = train_sums / jnp.maximum(train_counts, 1e-12)

    v_index = valid_index.reshape(k_members, slots, batch_size)
    v_weight = valid_weight.reshape(k_members, slots, batch_size)

    def valid_slot(slot, sums):
        loss_sum, w_sum = jax.vmap(loss_sums)(net, norm, v_index[:, slot], v_weight[:, slot])
        return sums[0] + loss_sum, sums[1] + w_sum

    valid_sums, valid_counts = jax.lax.fori_loop(0, n_valid_batches, valid_slot, (zeros, zeros))
    valid_loss = valid_sums / jnp.maximum(valid_counts, 1e-12)

    new_avg, new_prev, stop = rolling_stop(avg, prev, valid_loss, persistency, first)
    avg, prev = jnp.where(active, new_avg, avg), jnp.where(active, new_prev, prev)
    return net, opt_state, train_loss, valid_loss, avg, prev, active & ~stop


def _check_data(spec: EnsembleSpec, obs: Any, act: Any, next_obs: Any) -> tuple[np.ndarray, ...]:
    obs, act, next_obs = (np.asarray(x, np.float32) for x in (obs, act, next_obs))
    n = obs.shape[0] if obs.ndim else 0
    o, a = spec.obs_dim, spec.act_dim
    if obs.shape != (n, o) or next_obs.shape != (n, o) or act.shape != (n, a):
        raise ConfigError(f"fit needs obs [N, {spec.obs_dim}], act [N, {spec.act_dim}] and next_obs "
                          f"[N, {spec.obs_dim}], got {obs.shape}, {act.shape} and {next_obs.shape}.")
    return obs, act, next_obs


def _padded(index_lists: list[np.ndarray], rows: int) -> tuple[np.ndarray, np.ndarray]:
    index = np.zeros((len(index_lists), rows), np.int32)
    weight = np.zeros((len(index_lists), rows), np.float32)
    for k, idx in enumerate(index_lists):
        index[k, :len(idx)] = idx
        weight[k, :len(idx)] = 1.0
    return index, weight


def _splits(spec: EnsembleSpec, settings: FitSettings, n: int,
            rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-member (train, valid) row numbers; a shared split repeats one permutation."""
    n_valid = max(1, int(settings.valid_split * n))
    n_train = n - n_valid
    if n_train < 1:
        raise ConfigError(f"fit needs at least one training and one validation transition; {n} "
                          f"transitions with valid_split={settings.valid_split} "
                          f"leave {n_train} for training.")
    perms = [rng.permutation(n)] * spec.members if settings.shared_split else \
        [rng.permutation(n) for _ in range(spec.members)]
    train = [p[n_valid:] for p in perms]
    if settings.bootstrap:
        train = [t[rng.integers(0, n_train, n_train)] for t in train]
    return train, [p[:n_valid] for p in perms]


def fit(spec: EnsembleSpec, settings: FitSettings, state: ModelTrainState, obs: Any, act: Any,
        next_obs: Any, key: jax.Array, *, reset_optimizer: bool = False) -> tuple[ModelTrainState, FitReport]:
    """Fit the ensemble to all transitions ``obs, act, next_obs [N, ...]`` (module docstring).

    Warm-starts from ``state``'s weights (and Adam state unless ``reset_optimizer``); replaces
    every member's normalisation by its training split's. Everything random is drawn from
    ``key``: the same key and data give the same result."""
    obs, act, next_obs = _check_data(spec, obs, act, next_obs)
    if np.shape(state.params.norm.input_mean) != (spec.members, spec.input_dim):
        raise ConfigError(f"the train state does not belong to this spec: its input statistics have shape "
                          f"{np.shape(state.params.norm.input_mean)}, expected [members, obs+act] = "
                          f"{(spec.members, spec.input_dim)} (make it with init_model_state(spec, ...)).")
    n = obs.shape[0]
    split_key, epoch_key = jax.random.split(key)
    rng = np.random.default_rng(np.asarray(jax.random.bits(split_key, (4,), jnp.uint32)).tolist())
    train_lists, valid_lists = _splits(spec, settings, n, rng)
    norms = [normalization(obs[t], act[t], next_obs[t]) for t in train_lists]
    norm = Normalization(*(jnp.asarray(np.stack(col)) for col in zip(*norms, strict=True)))

    batch = settings.batch_size
    rows = minibatch_slots(n, batch) * batch
    train_index, train_weight = _padded(train_lists, rows)
    valid_index, valid_weight = _padded(valid_lists, rows)
    pad = ((0, rows - n), (0, 0))
    data = tuple(jnp.asarray(np.pad(x, pad)) for x in (obs, act, next_obs))

    net = state.params.net
    opt_state = _init_opt_state(net, float(settings.learning_rate)) if reset_optimizer else state.opt_state
    k_members = spec.members
    active = jnp.ones(k_members, bool)
    avg = prev = jnp.zeros(k_members, jnp.float32)
    constants = dict(
        data=data, train_index=jnp.asarray(train_index), train_weight=jnp.asarray(train_weight),
        valid_index=jnp.asarray(valid_index), valid_weight=jnp.asarray(valid_weight),
        n_train_batches=jnp.asarray(math.ceil(len(train_lists[0]) / batch), jnp.int32),
        n_valid_batches=jnp.asarray(math.ceil(len(valid_lists[0]) / batch), jnp.int32),
        persistency=jnp.asarray(settings.persistency, jnp.float32), key=epoch_key,
    )
    epochs = np.zeros(k_members, np.int64)
    train_hist, valid_hist = [], []
    last_train = np.zeros(k_members, np.float32)
    for epoch in range(settings.max_epochs):
        was_active = np.asarray(active)
        net, opt_state, train_loss, valid_loss, avg, prev, active = _fit_epoch(
            spec, batch, float(settings.learning_rate), net, opt_state, norm, active=active, avg=avg,
            prev=prev, first=jnp.asarray(epoch == 0), epoch=jnp.asarray(epoch, jnp.int32), **constants)
        epochs += was_active
        last_train = np.where(was_active, np.asarray(train_loss), last_train)
        valid_now = np.asarray(valid_loss)
        valid_hist.append(valid_now if epoch == 0 else np.where(was_active, valid_now, valid_hist[-1]))
        train_hist.append(last_train.copy())
        if not np.asarray(active).any():
            break
    report = FitReport(train_loss=last_train, valid_loss=valid_hist[-1].astype(np.float32), epochs=epochs,
                       stopped=~np.asarray(active), valid_history=np.stack(valid_hist),
                       train_history=np.stack(train_hist))
    return ModelTrainState(EnsembleParams(net, norm), opt_state), report
