"""The configuration of a run: every hyperparameter and its validation.

The settings come in groups (:data:`SETTING_GROUPS`): the run itself, the meta-RL composition
(below), and for model-based algorithms the real data, the dynamics ensemble, the model as a
simulator and the MPC planner (docs/model-based.md). A meta-RL run is a composition
(docs/architecture.md): an inner surrogate (:data:`~adaptrl.meta.surrogates.INNER_SURROGATES`),
an outer objective (:data:`~adaptrl.meta.surrogates.OUTER_SURROGATES`), an outer optimizer
(:data:`~adaptrl.meta.learner.OUTER_OPTIMIZERS`), a baseline, a policy and a few switches. The
valid names come from those registries. The algorithm recipes (:mod:`adaptrl.algorithms`) fill the
composition in; the resolved :class:`TrainConfig` is what a run directory's ``config.yaml`` holds.

Loss normalisation (``loss_reduction``). The estimators return the mean over trajectories of
the per-trajectory sum (the unbiased Monte-Carlo estimate of J). The original code minimised the
mean over *all time steps* of the task's batch instead, so its step sizes (inner 0.1, Adam 1e−3,
TRPO δ) are tuned for surrogates about ``horizon`` times smaller. ``loss_reduction="per_step"``
(every preset) multiplies each surrogate by N / Σ mask, which reproduces the original's
effective steps exactly; ``"per_trajectory"`` keeps the estimator as is.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from adaptrl import estimators, processing
from adaptrl.errors import ConfigError, unknown_name_error
from adaptrl.meta.adaptation import INNER_GRAD_NORMS
from adaptrl.meta.control_variates import CONTROL_VARIATE_KINDS, CV_OPTIMIZERS
from adaptrl.meta.learner import OUTER_OPTIMIZERS
from adaptrl.meta.surrogates import INNER_SURROGATES, OUTER_SURROGATES
from adaptrl.policies import POLICIES

LOSS_REDUCTIONS = ("per_step", "per_trajectory")

SETTING_GROUPS = ("run", "meta", "model", "planner", "imagination")
"""Settings come in groups: ``run`` (every algorithm), ``meta`` (the policy and its gradient-based
optimisation: the meta-RL composition, also TRPO in ME-TRPO), ``model`` (real data, the dynamics
ensemble and the model as a simulator), ``planner`` (MPC) and ``imagination`` (policy
optimisation on the model: ME-TRPO's validation, MB-MPO's meta-steps, real-data exploration).
An algorithm declares the groups it uses (:attr:`adaptrl.algorithms.base.AlgorithmSpec.settings`);
``--set`` of another group's key is an error naming the algorithms that use it."""

RUN_SETTINGS = ("algo", "env", "env_options", "seed", "iterations", "horizon", "checkpoint_every",
                "snapshot_every")
MODEL_KINDS = ("deterministic", "probabilistic")
MODEL_ACTIVATIONS = ("relu", "tanh", "swish")
MEMBER_CHOICES = ("task", "step_rand", "mean")
START_STATES = ("reset", "buffer")
POLICY_VALIDATIONS = ("none", "ensemble", "one_model", "model_mean", "real_oracle")
REAL_DATA_POLICIES = ("adapted", "pre_update")
EXPLORATION_NOISES = ("none", "episode", "step")
TRPO_CURVATURES = ("gauss_newton", "exact")


def _model(default: Any) -> Any:
    return field(default=default, metadata={"group": "model"})


def _planner(default: Any) -> Any:
    return field(default=default, metadata={"group": "planner"})


def _imagination(default: Any) -> Any:
    return field(default=default, metadata={"group": "imagination"})


def setting_group(name: str) -> str:
    """The group (:data:`SETTING_GROUPS`) of setting ``name``."""
    if name in RUN_SETTINGS:
        return "run"
    return FIELDS[name].metadata.get("group", "meta")


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter of a run (its ``config.yaml`` holds the groups its algorithm uses)."""

    algo: str
    env: str
    env_options: dict = field(default_factory=dict)
    seed: int = 0
    iterations: int = 1000
    # data
    tasks_per_iter: int = 40
    rollouts_per_task: int = 20
    horizon: int = 0  # 0 = the family's paper horizon
    discount: float = 0.99
    gae_lambda: float = 1.0
    baseline: str = "linear"
    normalize_advantages: bool = True
    loss_reduction: str = "per_step"
    # policy
    policy: str = "gaussian_mlp"
    hidden_sizes: tuple = (64, 64)
    init_std: float = 1.0
    # inner loop (adaptation)
    inner_steps: int = 1
    inner_estimator: str = "likelihood_ratio"
    inner_lr: float = 0.1
    learn_inner_lr: bool = False
    inner_grad_norm: str = "none"  # adaptation.INNER_GRAD_NORMS; unit: θ + α⊙g/‖g‖
    # outer objective and optimizer
    outer_objective: str = "log_likelihood"
    optimizer: str = "adam"
    outer_lr: float = 1e-3
    outer_steps: int = 1
    clip_eps: float = math.inf
    kl_coef: float = 0.0
    adaptive_kl: bool = False
    target_kl: float = 0.01
    emaml: bool = False
    max_kl: float = 0.01
    cg_iters: int = 10
    cg_damping: float = 0.0
    backtrack_ratio: float = 0.8
    max_backtracks: int = 15
    trpo_curvature: str = "gauss_newton"
    cg_subsample: float = 1.0
    # control variates (TMAML, Liu et al. 2019, §4.2, Alg. 1–2, Eq. 7 and 11)
    control_variate: str = "none"
    cv_formula: str = "corrected"
    cv_hidden_sizes: tuple = (64, 64)
    cv_inner_lr: float = 0.01
    cv_lr: float = 0.01
    # Adam, not Alg. 1's plain step: at β' = 0.01 the plain step leaves the control variate near
    # its zero-output start on MuJoCo tasks (docs/algorithms.md, deviation 13); --preset paper: sgd.
    cv_optimizer: str = "adam"
    cv_steps: int = 10
    cv_action_samples: int = 8
    # meta-gradient statistics during training (ProMP Fig. 4)
    grad_stats_every: int = 0
    grad_stats_batches: int = 10
    # run
    checkpoint_every: int = 10
    snapshot_every: int = 0
    # ---- model-based settings (group "model"; docs/model-based.md) ----
    # real data
    real_steps_per_iter: int = _model(4000)
    initial_random_steps: int = _model(5000)
    buffer_size: int = _model(100_000)
    # dynamics ensemble (thesis App. B.3)
    model_members: int = _model(5)
    model_hidden_sizes: tuple = _model((512, 512))
    model_kind: str = _model("deterministic")
    model_activation: str = _model("relu")
    model_weight_norm: bool = _model(True)
    model_lr: float = _model(1e-3)
    model_batch_size: int = _model(500)
    model_max_epochs: int = _model(500)
    model_valid_split: float = _model(0.2)
    model_persistency: float = _model(0.95)
    model_bootstrap: bool = _model(False)
    model_shared_split: bool = _model(False)
    model_reinit_every: int = _model(0)
    model_reset_optimizer: bool = _model(False)
    model_pred_error_k: int = _model(10)
    # the model as a simulator
    member_choice: str = _model("task")
    model_start_states: str = _model("reset")
    model_start_pool: int = _model(1000)
    model_clip_margin: float = _model(1.0)
    model_output_bias_max: float = _model(0.0)
    model_output_noise_std: float = _model(0.0)
    # ---- MPC planner (group "planner") ----
    planner: str = _planner("random_shooting")
    plan_horizon: int = _planner(10)
    plan_candidates: int = _planner(1000)
    plan_particles: int = _planner(1)
    plan_discount: float = _planner(1.0)
    cem_elites: int = _planner(100)
    cem_iterations: int = _planner(5)
    cem_momentum: float = _planner(0.1)
    cem_init_std: float = _planner(0.5)
    mppi_temperature: float = _planner(10.0)
    mppi_noise_std: float = _planner(0.5)
    mppi_smoothing: float = _planner(0.5)
    # ---- policy optimisation on the model (group "imagination"; ME-TRPO, MB-MPO) ----
    policy_steps_per_iter: int = _imagination(30)
    policy_validation: str = _imagination("none")
    validation_every: int = _imagination(5)
    validation_patience: int = _imagination(25)
    validation_threshold: float = _imagination(0.7)
    validation_rollouts: int = _imagination(500)
    reset_policy_std: bool = _imagination(False)
    real_data_policy: str = _imagination("adapted")
    exploration_noise: str = _imagination("none")
    exploration_std: float = _imagination(3.0)
    param_noise_scale: float = _imagination(0.0)
    real_eval_episodes: int = _imagination(20)

    def to_dict(self, groups: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Plain YAML-able mapping (tuples become lists); with ``groups``, only the settings of
        those groups (:data:`SETTING_GROUPS`; an algorithm's ``config.yaml`` holds the groups it
        uses)."""
        out = {}
        for f in dataclasses.fields(self):
            if groups is not None and setting_group(f.name) not in groups:
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_yaml(self, groups: tuple[str, ...] | None = None) -> str:
        return yaml.safe_dump(self.to_dict(groups), sort_keys=False)


FIELD_HELP: dict[str, str] = {
    "algo": "preset name the run was built from",
    "env": "task family (adaptrl envs)",
    "env_options": "task options passed to adaptrl.envs.make (set one with env_options.NAME=VALUE)",
    "seed": "one integer seeding tasks, resets, action noise and network init",
    "iterations": "outer iterations",
    "tasks_per_iter": "tasks sampled per iteration (meta-batch size)",
    "rollouts_per_task": "trajectories per task per adaptation step",
    "horizon": "steps per trajectory (0 = the family's paper horizon)",
    "discount": "γ of the returns and GAE",
    "gae_lambda": "λ of GAE (1 = Monte-Carlo return minus baseline)",
    "baseline": f"value baseline refit per task and step: {processing.BASELINES.help()} "
                "(linear: the original's features)",
    "normalize_advantages": "standardise advantages per task (original behaviour)",
    "loss_reduction": "per_step (mean over real time steps, the original's) or per_trajectory",
    "policy": f"policy kind: {POLICIES.help()} (quadratic_feature: the 2-parameter 1-D policy of "
              "ProMP Fig. 6)",
    "hidden_sizes": "policy MLP hidden sizes, e.g. 64,64",
    "init_std": "initial policy standard deviation",
    "inner_steps": "adaptation steps K (each on its own freshly sampled batch)",
    "inner_estimator": f"inner surrogate: {INNER_SURROGATES.help()}",
    "inner_lr": "inner step size α (initial value if learned)",
    "learn_inner_lr": "learn a per-parameter step size with the outer optimizer (Meta-SGD style)",
    "inner_grad_norm": "inner gradient normalisation: none (θ + α⊙g, the papers') or unit "
                       "(θ + α⊙g/√(‖g‖² + ε²), ε = 1e-8, global L2 norm per task: every inner step has "
                       "size α, so estimators of different scale, DiCE vs LVC, compare at equal "
                       "step; the meta-gradient differentiates through it)",
    "outer_objective": f"outer surrogate: {OUTER_SURROGATES.help()}",
    "optimizer": f"outer optimizer: {OUTER_OPTIMIZERS.help()}",
    "outer_lr": "Adam learning rate β",
    "outer_steps": "Adam steps on the same data per iteration (ProMP's N)",
    "clip_eps": "clip range ε of the clipped ratio (inf = no clipping)",
    "kl_coef": "η of the inner KL penalty η·KL(π_θo‖π_θ) (ProMP)",
    "adaptive_kl": "adapt η per inner step with the ×2 / ÷2 rule towards target_kl",
    "target_kl": "target inner KL of the adaptive rule",
    "emaml": "add the E-MAML pre-update credit term (formulation II)",
    "max_kl": "TRPO trust region δ on the mean KL of the post-update policies",
    "cg_iters": "TRPO conjugate-gradient iterations",
    "cg_damping": "TRPO damping λ: CG solves (F + λI)x = g",
    "backtrack_ratio": "TRPO line-search shrink factor",
    "max_backtracks": "TRPO line-search tries",
    "trpo_curvature": "the KL Hessian-vector product of the TRPO step through adaptation: gauss_newton "
                      "(J_Uᵀ H J_U: a jvp and a vjp of the adaptation U; equal to the exact Hessian at "
                      "the sampling parameters) or exact (forward-over-reverse of the whole KL, third "
                      "derivatives of the inner objective)",
    "cg_subsample": "fraction f of each task's rollouts (the first f·R) on which the TRPO step's "
                    "KL curvature (conjugate-gradient products) is computed; 1 = all (the papers); "
                    "the gradient and the line search always use all",
    "control_variate": "TMAML control variate added to DiCE: none, meta (Alg. 1) or task (Eq. 11, "
                       "action-dependent)",
    "cv_formula": "control-variate surrogate: corrected (unbiased, docs/algorithms.md) or paper "
                  "(TMAML Eq. 7 as printed)",
    "cv_hidden_sizes": "control-variate network hidden sizes",
    "cv_inner_lr": "α' of the meta control variate's adaptation step (TMAML Alg. 1)",
    "cv_lr": "β' of the control-variate update (TMAML Alg. 1); Adam rate of the per-task CV fit",
    "cv_optimizer": "update of the meta control variate with rate β': sgd (TMAML Alg. 1) or adam",
    "cv_steps": "control-variate updates per sampled batch",
    "cv_action_samples": "samples of a^i per action coordinate for the per-task CV's expectation (Eq. 11)",
    "grad_stats_every": "every N iterations resample grad_stats_batches batches and log the "
                        "meta-gradient's relative std (0 = off)",
    "grad_stats_batches": "independent batches per meta-gradient statistics measurement",
    "checkpoint_every": "write a checkpoint every N iterations (and on Ctrl-C)",
    "snapshot_every": "also keep the checkpoint after every N-th iteration as checkpoints/itr_N.npz, "
                      "for eval/video --iteration N (0 = off: only the latest two are kept)",
    # model-based (docs/model-based.md)
    "real_steps_per_iter": "real environment steps collected per iteration (whole episodes of "
                           "`horizon` steps: rounded up to a multiple of the horizon)",
    "initial_random_steps": "real steps of the uniform random controller in the first iteration",
    "buffer_size": "capacity of the FIFO transition buffer the models are fitted on",
    "model_members": "K, dynamics models in the ensemble",
    "model_hidden_sizes": "hidden sizes of each model's MLP, e.g. 512,512",
    "model_kind": "deterministic (MSE on the normalised Δs) or probabilistic (Gaussian NLL, PETS style)",
    "model_activation": "hidden activation of the models: relu, tanh or swish",
    "model_weight_norm": "weight normalisation of the model layers (thesis App. B.3)",
    "model_lr": "Adam learning rate of the models",
    "model_batch_size": "model minibatch size",
    "model_max_epochs": "most epochs per model fit (early stopping usually ends it sooner)",
    "model_valid_split": "fraction of the data each member validates on",
    "model_persistency": "p of the rolling validation average that stops a member "
                         "(thesis 0.95, original code 0.99)",
    "model_bootstrap": "each member trains on a bootstrap resample of its training split",
    "model_shared_split": "all members share one train/validation split (ME-TRPO) instead of "
                          "drawing their own (MB-MPO)",
    "model_reinit_every": "re-initialise the models every N iterations (ME-TRPO: 5; 0 = warm start)",
    "model_reset_optimizer": "reset the models' Adam moments at every fit",
    "model_pred_error_k": "k of the logged k-step open-loop prediction error Model-PredError-k",
    "member_choice": "ensemble member of an imagined transition: task (task i ↦ member i mod K, "
                     "MB-MPO), step_rand (uniform per step, ME-TRPO) or mean (ensemble mean)",
    "model_start_states": "imagined rollouts start from reset (the real initial-state "
                          "distribution) or buffer (real states from the buffer)",
    "model_start_pool": "number of real start states kept for imagined rollouts",
    "model_clip_margin": "predicted states are clipped to the data range widened by this many "
                         "range widths on each side (inf = no clipping)",
    "model_output_bias_max": "b_max of the biased-model experiment: N(b, σ²) with b ~ U(0, b_max) "
                             "per member added to the normalised Δ (thesis §5.5.3)",
    "model_output_noise_std": "σ of that noise (thesis §5.5.3: 0.1)",
    # planner
    "planner": "MPC planner: random_shooting, cem or mppi",
    "plan_horizon": "planning horizon H (steps)",
    "plan_candidates": "action sequences evaluated per planning step",
    "plan_particles": "particles per candidate; particle p follows ensemble member p mod K "
                      "(TS-∞ of PETS); 1: one random member per planning call",
    "plan_discount": "discount of the planned return",
    "cem_elites": "CEM: elite sequences refitted per iteration",
    "cem_iterations": "CEM: refits per planning step",
    "cem_momentum": "CEM: weight of the previous mean/std in each refit",
    "cem_init_std": "CEM: initial std as a fraction of the action half-range",
    "mppi_temperature": "MPPI: γ of the weights exp(γ·(R − max R))",
    "mppi_noise_std": "MPPI: noise std as a fraction of the action half-range",
    "mppi_smoothing": "MPPI: β of the filter u_t = β(mean_t + ε_t) + (1 − β)u_(t−1)",
    # policy optimisation on the model
    "policy_steps_per_iter": "policy (meta-)updates per iteration, each on a fresh imagined batch "
                             "(MB-MPO: 30); with policy_validation, the most (ME-TRPO: 400)",
    "policy_validation": "stop the updates by validation (ME-TRPO Eq. 5): none (a fixed count), "
                         "ensemble (≥ threshold of the members improve), one_model, model_mean or "
                         "real_oracle (the real env: an oracle, its steps are not training data)",
    "validation_every": "updates between validation checks (ME-TRPO: 5)",
    "validation_patience": "leave the policy phase after this many updates without a passed check "
                           "and keep the last passed policy (ME-TRPO: 25)",
    "validation_threshold": "fraction of members whose deterministic return must strictly improve "
                            "for a check to pass (ME-TRPO: 0.7)",
    "validation_rollouts": "fixed start states of the validation returns J_k (ME-TRPO: 500)",
    "reset_policy_std": "reset the policy's log-std to log(init_std) and the outer optimizer state "
                        "at the start of every policy phase (ME-TRPO code)",
    "real_data_policy": "who collects the real data: adapted (the adapted policies, episode j by "
                        "task j mod M: MB-MPO's tailored exploration) or pre_update (the policy θ)",
    "exploration_noise": "real-data action noise: none (the policy's own Gaussian), episode (mean "
                         "+ N(0, σ²), σ ~ U(0, exploration_std) per episode: ME-TRPO thesis) or "
                         "step (σ redrawn every step: ME-TRPO code)",
    "exploration_std": "the largest σ of that noise (ME-TRPO: 3.0)",
    "param_noise_scale": "c of the per-episode parameter noise N(0, (c·|θ − θ_prev|)²) on the "
                         "weights (ME-TRPO: 3.0; 0 = off)",
    "real_eval_episodes": "real episodes per iteration measuring the pre-update and the adapted "
                          "policies (logging only: not training data; 0 = off)",
}


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def coerce_setting(name: str, value: Any) -> Any:
    """Convert ``value`` (from YAML or a ``--set`` string) to the type of field ``name``."""
    default = FIELDS[name].default
    if default is dataclasses.MISSING:
        default = ""
    if name in ("hidden_sizes", "cv_hidden_sizes", "model_hidden_sizes"):
        if isinstance(value, str):
            parts = [p for p in value.replace("(", "").replace(")", "").replace("[", "")
                     .replace("]", "").split(",") if p.strip()]
            value = parts
        try:
            sizes = tuple(int(v) for v in value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be integers like 64,64, got {value!r}.") from None
        if not sizes or any(s < 1 for s in sizes):
            raise ConfigError(f"{name} must be positive integers like 64,64, got {value!r}.")
        return sizes
    if name == "env_options":
        if not isinstance(value, Mapping):
            raise ConfigError(f"env_options must be a mapping, got {value!r}.")
        return dict(value)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {value!r}.")
    if isinstance(default, int):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be an integer, got {value!r}.") from None
        if number != int(number):
            raise ConfigError(f"{name} must be an integer, got {value!r}.")
        return int(number)
    if isinstance(default, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number, got {value!r}.") from None
    return str(value)


def validate(config: TrainConfig) -> TrainConfig:
    """Validate ranges and names; one clear message per mistake."""
    choices = {"inner_estimator": INNER_SURROGATES.names(), "outer_objective": OUTER_SURROGATES.names(),
               "optimizer": OUTER_OPTIMIZERS.names(), "baseline": tuple(processing.BASELINES),
               "loss_reduction": LOSS_REDUCTIONS, "control_variate": CONTROL_VARIATE_KINDS,
               "cv_formula": tuple(estimators.CONTROL_VARIATES), "policy": POLICIES.names(),
               "cv_optimizer": tuple(CV_OPTIMIZERS), "trpo_curvature": TRPO_CURVATURES,
               "inner_grad_norm": INNER_GRAD_NORMS}
    for name, valid in choices.items():
        value = getattr(config, name)
        if value not in valid:
            raise unknown_name_error(name.replace("_", " "), value, valid)
    for name in ("iterations", "tasks_per_iter", "rollouts_per_task", "outer_steps", "cg_iters",
                 "max_backtracks", "checkpoint_every", "cv_steps", "cv_action_samples"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be a positive integer, got {getattr(config, name)}.")
    if config.inner_steps < 0:
        raise ConfigError(f"inner_steps must be ≥ 0, got {config.inner_steps}.")
    if config.horizon < 0:
        raise ConfigError(f"horizon must be ≥ 0 (0 = the family's), got {config.horizon}.")
    for name in ("outer_lr", "max_kl", "init_std", "target_kl"):
        if not getattr(config, name) > 0:
            raise ConfigError(f"{name} must be > 0, got {getattr(config, name)}.")
    for name in ("kl_coef", "cg_damping"):
        if not getattr(config, name) >= 0:
            raise ConfigError(f"{name} must be ≥ 0, got {getattr(config, name)}.")
    if not config.clip_eps > 0:
        raise ConfigError(f"clip_eps must be > 0 (inf = no clipping), got {config.clip_eps}.")
    if not 0 < config.discount <= 1 or not 0 <= config.gae_lambda <= 1:
        raise ConfigError("discount must be in (0, 1] and gae_lambda in [0, 1].")
    if not 0 < config.cg_subsample <= 1:
        raise ConfigError(f"cg_subsample must be in (0, 1] (the fraction of each task's rollouts the "
                          f"TRPO curvature uses), got {config.cg_subsample}.")
    if not 0 < config.backtrack_ratio < 1:
        raise ConfigError(f"backtrack_ratio must be in (0, 1), got {config.backtrack_ratio}.")
    if config.control_variate != "none" and config.inner_estimator != "dice":
        raise ConfigError(f"control_variate={config.control_variate} needs inner_estimator=dice "
                          f"(TMAML adds the control variate to DiCE), got {config.inner_estimator}.")
    if config.control_variate != "none" and config.rollouts_per_task < 2:
        raise ConfigError("a control variate needs rollouts_per_task ≥ 2 (it is fitted on one half "
                          "of a task's trajectories and used on the other).")
    if config.snapshot_every < 0:
        raise ConfigError(f"snapshot_every must be ≥ 0 (0 = off), got {config.snapshot_every}.")
    if config.grad_stats_every < 0 or config.grad_stats_batches < 2:
        raise ConfigError("grad_stats_every must be ≥ 0 (0 = off) and grad_stats_batches ≥ 2, got "
                          f"{config.grad_stats_every} and {config.grad_stats_batches}.")
    for name in ("cv_inner_lr", "cv_lr"):
        if not getattr(config, name) >= 0:
            raise ConfigError(f"{name} must be ≥ 0, got {getattr(config, name)}.")
    if not math.isfinite(config.inner_lr):
        raise ConfigError(f"inner_lr must be finite, got {config.inner_lr}.")
    return _validate_model_based(config)


def _validate_model_based(config: TrainConfig) -> TrainConfig:
    from adaptrl.planners import PLANNERS

    choices = {"model_kind": MODEL_KINDS, "model_activation": MODEL_ACTIVATIONS,
               "member_choice": MEMBER_CHOICES, "model_start_states": START_STATES,
               "planner": PLANNERS.names()}
    for name, valid in choices.items():
        if getattr(config, name) not in valid:
            raise unknown_name_error(name.replace("_", " "), getattr(config, name), valid)
    for name in ("real_steps_per_iter", "buffer_size", "model_members", "model_batch_size",
                 "model_max_epochs", "model_pred_error_k", "model_start_pool", "plan_horizon",
                 "plan_candidates", "plan_particles", "cem_elites", "cem_iterations"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be a positive integer, got {getattr(config, name)}.")
    for name in ("initial_random_steps", "model_reinit_every"):
        if getattr(config, name) < 0:
            raise ConfigError(f"{name} must be ≥ 0, got {getattr(config, name)}.")
    if not 0 < config.model_valid_split < 1:
        raise ConfigError(f"model_valid_split must be in (0, 1), got {config.model_valid_split}.")
    if not 0 <= config.model_persistency < 1:
        raise ConfigError(f"model_persistency must be in [0, 1), got {config.model_persistency}.")
    for name in ("model_lr", "mppi_temperature", "mppi_noise_std", "cem_init_std"):
        if not getattr(config, name) > 0:
            raise ConfigError(f"{name} must be > 0, got {getattr(config, name)}.")
    for name in ("model_clip_margin", "model_output_bias_max", "model_output_noise_std"):
        if not getattr(config, name) >= 0:
            raise ConfigError(f"{name} must be ≥ 0, got {getattr(config, name)}.")
    if not 0 <= config.cem_momentum < 1:
        raise ConfigError(f"cem_momentum must be in [0, 1), got {config.cem_momentum}.")
    if not 0 < config.mppi_smoothing <= 1:
        raise ConfigError(f"mppi_smoothing must be in (0, 1], got {config.mppi_smoothing}.")
    if not 0 < config.plan_discount <= 1:
        raise ConfigError(f"plan_discount must be in (0, 1], got {config.plan_discount}.")
    choices = {"policy_validation": POLICY_VALIDATIONS, "real_data_policy": REAL_DATA_POLICIES,
               "exploration_noise": EXPLORATION_NOISES}
    for name, valid in choices.items():
        if getattr(config, name) not in valid:
            raise unknown_name_error(name.replace("_", " "), getattr(config, name), valid)
    for name in ("policy_steps_per_iter", "validation_every", "validation_patience",
                 "validation_rollouts"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be a positive integer, got {getattr(config, name)}.")
    if config.real_eval_episodes < 0:
        raise ConfigError(f"real_eval_episodes must be ≥ 0, got {config.real_eval_episodes}.")
    if not 0 < config.validation_threshold <= 1:
        raise ConfigError(f"validation_threshold must be in (0, 1], got {config.validation_threshold}.")
    for name in ("exploration_std", "param_noise_scale"):
        if not getattr(config, name) >= 0:
            raise ConfigError(f"{name} must be ≥ 0, got {getattr(config, name)}.")
    if config.planner == "cem" and config.cem_elites > config.plan_candidates:
        raise ConfigError(f"cem_elites ({config.cem_elites}) must not exceed plan_candidates "
                          f"({config.plan_candidates}).")
    return config


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from a ``config.yaml`` mapping (validated)."""
    unknown = [k for k in data if k not in FIELDS]
    if unknown:
        raise ConfigError(f"config has unknown keys {unknown}; valid keys: {', '.join(FIELDS)}.")
    missing = [k for k in ("algo", "env") if k not in data]
    if missing:
        raise ConfigError(f"config lacks {missing}.")
    values = {k: coerce_setting(k, v) for k, v in data.items() if k not in ("algo", "env")}
    return validate(TrainConfig(algo=str(data["algo"]), env=str(data["env"]), **values))
