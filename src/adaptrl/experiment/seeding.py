"""Seeding: every random number of a run derives from ``(seed, iteration)``.

``init_key(seed)`` seeds the algorithm's initial state; ``iteration_key(seed, itr)`` everything
random in iteration ``itr`` (tasks, resets, action noise). A run resumed from its checkpoint
therefore writes exactly the rows an uninterrupted run would have written.
"""

from __future__ import annotations

import jax


def init_key(seed: int) -> jax.Array:
    """The key of the algorithm's initial state."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 0)


def iteration_key(seed: int, itr: int) -> jax.Array:
    """The key of iteration ``itr``: everything random in that iteration derives from it."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), itr + 1)
