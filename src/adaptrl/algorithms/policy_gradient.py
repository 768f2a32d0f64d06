"""Single-task model-free baselines — TRPO, PPO and VPG — as zero-inner-step meta-RL.

With K = ``inner_steps`` = 0 there is no adaptation: θ_K = θ, the meta-objective of
:class:`~adaptrl.algorithms.meta_rl.MetaRL` is the outer surrogate at θ on the data D sampled
with π_θo (θo = θ at sampling time), and one meta-iteration is one iteration of the plain
policy-gradient method. With ``tasks_per_iter`` = 1 every iteration samples
``rollouts_per_task`` trajectories of one task; A_t is GAE(γ, λ) on a linear-feature baseline
refit on each batch, standardised (:mod:`adaptrl.meta.batch`):

* ``trpo`` — TRPO (Schulman et al., ICML 2015, "Trust Region Policy Optimization", §5, Eq. 14;
  advantages by GAE, Schulman et al., ICLR 2016): one natural-gradient step with a backtracking
  line search on

      J^TRPO(θ) = E_{τ∼π_θo}[ Σ_t π_θ(a_t|s_t)/π_θo(a_t|s_t) · A_t ]   s.t.  mean_t KL(π_θo ‖ π_θ) ≤ δ,

  δ = 0.01 (:func:`adaptrl.optim.trpo.trpo_step`: conjugate gradient on exact Fisher-vector
  products, the step accepted only if the surrogate improves and the KL is within δ);
* ``ppo`` — PPO's clipped surrogate (Schulman et al., 2017, "Proximal Policy Optimization
  Algorithms", Eq. 7):

      J^CLIP(θ) = E_{τ∼π_θo}[ Σ_t min(ρ_t A_t, clip(ρ_t, 1 − ε, 1 + ε) A_t) ],  ρ_t = π_θ/π_θo,

  ε = 0.2, maximised by ``outer_steps`` = 10 Adam steps (β = 3·10⁻⁴) on the same data. Unlike the
  PPO paper (which takes 10 epochs of minibatches of 64 samples, its Table 3), every Adam step here
  is a *full-batch* step on the iteration's whole data set: no minibatches, no shuffling. There is
  no value-function loss or entropy bonus (the baseline is the refit linear one), and no KL
  penalty (``kl_coef`` = 0; the ProMP penalty acts on inner steps only, of which there are none);
* ``vpg`` — REINFORCE with a baseline, "vanilla policy gradient" (Williams, 1992): one Adam step
  on the score-function surrogate

      J^VPG(θ) = E_{τ∼π_θo}[ Σ_t log π_θ(a_t|s_t) · A_t ],

  A_t the Monte-Carlo return minus the baseline (GAE λ = 1).

At θ = θo the three surrogates have the same gradient, the policy gradient (mean over
trajectories of Σ_t ∇log π_θ(a_t|s_t)·A_t); they differ in how far and how they step. Every
surrogate is normalised per real time step (``loss_reduction="per_step"``, docs/algorithms.md,
"Loss normalisation"): that rescales the gradient by 1/(mean trajectory length), which Adam and
TRPO's δ-normalised step do not feel (Adam up to its ε).

Environments: the single-task ones (``HalfCheetah``, ``Ant``, ``Walker2D``, ``Hopper``,
``Swimmer``: host MuJoCo, horizon 200; ``Point2D``: device, horizon 30). On a meta-RL task family
(e.g. ``HalfCheetahRandVel``) they run as well; then the one task is drawn afresh every iteration,
so the policy is trained on the task *distribution* without adaptation (a multi-task,
"pre-update only" baseline), not on one fixed task. Logged keys are MetaRL's: the return is
``Step_0-AverageReturn`` (there is no post-update step).

Settings. The default composition is sized for a quick look (``adaptrl train trpo --env Point2D``:
20 trajectories of one task per iteration, 100 iterations). ``--preset paper`` is the yardstick of
the model-based thesis (Clavera 2020, the model-free comparison of MB-MPO, Fig. 7/8, at horizon
200). We do not have the settings of the thesis's model-free runs, so every value below is *our
choice*, with its reason (a value taken from a paper says which):

* 50 trajectories per iteration — 10,000 real steps at horizon 200 (our choice: a batch large
  enough for a stable trust-region step; PPO's Table 3 collects 2048 steps per iteration);
* policy (64, 64) tanh, Gaussian with a learned state-independent log-std (the PPO paper's
  MuJoCo policy, §6.1, and ProMP's Table 1 size, so meta-RL and model-free runs share it);
* γ = 0.99 (the PPO paper's); GAE λ = 0.97 for ``trpo`` and ``ppo`` (our choice; PPO's Table 3
  uses 0.95), λ = 1 for ``vpg`` (plain REINFORCE with a baseline);
* δ = 0.01 for ``trpo`` (TRPO's MuJoCo step size, and maml-trpo's here); ε = 0.2, β = 3·10⁻⁴ and 10
  steps for ``ppo`` (PPO's Table 3 values, with full-batch steps as said above);
  β = 10⁻³ for ``vpg`` (maml-vpg's and ProMP's β; our check: on a fresh (64, 64) policy and a 10-
  trajectory HalfCheetah batch one Adam step of 10⁻³ moves the policy by mean KL ≈ 0.013 (≈ TRPO's δ),
  while 10⁻² moved it by KL ≈ 1.3);
* linear-feature baseline refit on every batch, advantages standardised (the original ProMP
  code's processing, which every recipe here uses);
* 1000 iterations, 10⁷ real steps (our choice; ``--iterations`` changes it).
"""

from __future__ import annotations

from typing import Any

from adaptrl.algorithms import meta_rl
from adaptrl.algorithms.base import AlgorithmSpec, register

#: The host MuJoCo single-task environments of the thesis's model-free comparison (horizon 200).
MUJOCO_SINGLE_TASK = ("HalfCheetah", "Ant", "Walker2D", "Hopper", "Swimmer")

#: What the three share: no adaptation, one task per iteration.
SINGLE_TASK = dict(inner_steps=0, tasks_per_iter=1, rollouts_per_task=20, iterations=100,
                   hidden_sizes=(64, 64), discount=0.99, baseline="linear",
                   normalize_advantages=True, kl_coef=0.0, adaptive_kl=False, emaml=False)

TRPO = dict(SINGLE_TASK, outer_objective="ratio", optimizer="trpo", max_kl=0.01, gae_lambda=0.97)
PPO = dict(SINGLE_TASK, outer_objective="clip", clip_eps=0.2, optimizer="adam", outer_steps=10,
           outer_lr=3e-4, gae_lambda=0.97)
VPG = dict(SINGLE_TASK, outer_objective="log_likelihood", optimizer="adam", outer_steps=1,
           outer_lr=1e-3, gae_lambda=1.0)

#: ``--preset paper`` on every environment (module docstring: our choices, with reasons).
PAPER = dict(rollouts_per_task=50, hidden_sizes=(64, 64), discount=0.99, baseline="linear",
             normalize_advantages=True, iterations=1000)


def paper_settings(env: str) -> dict[str, Any]:
    """``--preset paper`` for canonical environment ``env``: :data:`PAPER`, and horizon 200 on the
    MuJoCo single-task environments (the thesis's; other families keep their own horizon)."""
    settings = dict(PAPER)
    if env in MUJOCO_SINGLE_TASK:
        settings["horizon"] = 200
    return settings


register(AlgorithmSpec(
    name="trpo",
    description="TRPO (single task, no adaptation): one trust-region step on Σ π/π_old·A, δ = 0.01",
    composition=TRPO,
    build=meta_rl.build,
    paper_settings=paper_settings,
    paper="Schulman et al. (2015) TRPO; yardstick of Clavera 2020 (thesis) Fig. 7/8",
))
register(AlgorithmSpec(
    name="ppo",
    description="PPO clipped surrogate (single task, ε = 0.2), 10 full-batch Adam steps",
    composition=PPO,
    build=meta_rl.build,
    paper_settings=paper_settings,
    paper="Schulman et al. (2017) PPO Eq. 7; yardstick of Clavera 2020 (thesis) Fig. 7/8",
))
register(AlgorithmSpec(
    name="vpg",
    description="vanilla policy gradient / REINFORCE with baseline (single task), one Adam step",
    composition=VPG,
    build=meta_rl.build,
    paper_settings=paper_settings,
    paper="Williams (1992) REINFORCE with a baseline; yardstick of Clavera 2020 (thesis) Fig. 7/8",
))
