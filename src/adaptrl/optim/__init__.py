"""Optimisers for the outer (meta) step."""

from adaptrl.optim.trpo import conjugate_gradient, hvp, trpo_search_direction, trpo_step

__all__ = ["conjugate_gradient", "hvp", "trpo_search_direction", "trpo_step"]
