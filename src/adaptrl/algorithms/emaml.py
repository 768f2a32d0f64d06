"""E-MAML (Stadie et al., 2018) in ProMP's formulation II (ProMP §4, Eq. 3): MAML plus a
pre-update credit-assignment term that rewards the pre-update policy for the return its
adaptation led to:

    J_i(θ) = J^outer_i(θ'_i) + Σ_{k<K} E_{τ∼π_θk}[ Σ_t log π_θk(a_t|s_t) ] · ⊥R̂'_i

R̂'_i is the task's mean post-update reward standardised over the meta-batch, as in the original
ProMP code (docs/algorithms.md). ``emaml-trpo`` and ``emaml-vpg`` use MAML's outer steps.
"""

from __future__ import annotations

from adaptrl.algorithms import meta_rl
from adaptrl.algorithms.base import AlgorithmSpec, register
from adaptrl.algorithms.maml import TRPO, VPG

register(AlgorithmSpec(
    name="emaml-trpo",
    description="E-MAML-TRPO: MAML-TRPO + E-MAML pre-update credit term (formulation II)",
    composition=dict(TRPO, inner_estimator="pgt", emaml=True),
    build=meta_rl.build, paper_settings=meta_rl.promp_paper_settings,
    paper="ProMP §4 (formulation II), §7.1",
))
register(AlgorithmSpec(
    name="emaml-vpg",
    description="E-MAML-VPG: MAML-VPG + E-MAML pre-update credit term",
    composition=dict(VPG, inner_estimator="pgt", emaml=True),
    build=meta_rl.build, paper_settings=meta_rl.promp_paper_settings,
    paper="ProMP §7.1, Fig. 3",
))
