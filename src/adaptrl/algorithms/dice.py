"""DiCE-VPG — the infinitely differentiable Monte-Carlo estimator (Foerster et al., 2018) in the
inner and the outer objective (ProMP §4, Eq. 7–8):

    J^DiCE(τ) = Σ_t □( Σ_{t'≤t} log π_θ(a_t'|s_t') ) · r_t,     □(x) = exp(x − ⊥x)

Its Hessian is unbiased, E[∇²J^DiCE] = H1 + H2 + H12 + H12ᵀ (Eq. 8), at the price of high
variance. The rewards are discount-folded, minus a linear time baseline, standardised per task
(docs/algorithms.md). One Adam step per iteration.
"""

from __future__ import annotations

from adaptrl.algorithms import meta_rl
from adaptrl.algorithms.base import AlgorithmSpec, register
from adaptrl.algorithms.maml import VPG

register(AlgorithmSpec(
    name="dice-vpg",
    description="DiCE-VPG: DiCE in the inner and the outer objective, one Adam step",
    composition=dict(VPG, inner_estimator="dice", outer_objective="dice"),
    build=meta_rl.build, paper_settings=meta_rl.promp_paper_settings,
    paper="ProMP §7.2, Fig. 3",
))
