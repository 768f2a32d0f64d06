"""Training configuration, the algorithm presets and the paper's per-environment settings.

An algorithm is a composition (design.md): an inner estimator, an outer objective, an outer
optimizer and a few switches. A preset fills those in; ``--preset paper`` adds the settings the
ProMP paper used for the chosen environment (ProMP App. D, reference §9.2); ``--set key=value``
overrides single values. The resolved :class:`TrainConfig` is what a run directory's
``config.yaml`` holds.

Loss normalisation (``loss_reduction``). The estimators return the mean over trajectories of
the per-trajectory sum (the unbiased Monte-Carlo estimate of J). The original code minimised the
mean over *all time steps* of the task's batch instead, so its step sizes (inner 0.1, Adam 1e−3,
TRPO δ) are tuned for surrogates about ``horizon`` times smaller. ``loss_reduction="per_step"``
(every preset) multiplies each surrogate by N / Σ mask, which reproduces the original's
effective steps exactly; ``"per_trajectory"`` keeps the estimator as is.

Inner step size. ProMP's Table 1 prints α = 0.01, but every released configuration (the run
scripts and the paper's sweeps, reference §9) uses 0.1 with the per-step normalisation above
(0.05 for the RandParams envs). The presets follow the released code; the difference is listed in
docs/algorithms.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from adaptrl.errors import ConfigError, unknown_name_error

INNER_ESTIMATORS = ("pgt", "lvc", "dice", "likelihood_ratio")
CONTROL_VARIATES = ("none", "meta", "task")
CV_FORMULAS = ("corrected", "paper")
CV_OPTIMIZERS = ("sgd", "adam")
POLICIES = ("gaussian_mlp", "quadratic_feature")
OUTER_OBJECTIVES = ("log_likelihood", "ratio", "clip", "dice")
OPTIMIZERS = ("adam", "trpo")
BASELINES = ("linear", "zero")
LOSS_REDUCTIONS = ("per_step", "per_trajectory")


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter of a gradient-based meta-RL run (the run's ``config.yaml``)."""

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
    # control variates (TMAML, spec CV-1…CV-4, EST-5/6)
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
    # meta-gradient statistics during training (ProMP Fig. 4, spec EST-8)
    grad_stats_every: int = 0
    grad_stats_batches: int = 10
    # run
    checkpoint_every: int = 10

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-able mapping (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["hidden_sizes"] = list(self.hidden_sizes)
        out["cv_hidden_sizes"] = list(self.cv_hidden_sizes)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


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
    "baseline": "value baseline refit per task and step: linear (features of the original) or zero",
    "normalize_advantages": "standardise advantages per task (original behaviour)",
    "loss_reduction": "per_step (mean over real time steps, the original's) or per_trajectory",
    "policy": "policy kind: gaussian_mlp or quadratic_feature (the 2-parameter 1-D policy of ProMP Fig. 6)",
    "hidden_sizes": "policy MLP hidden sizes, e.g. 64,64",
    "init_std": "initial policy standard deviation",
    "inner_steps": "adaptation steps K (each on its own freshly sampled batch)",
    "inner_estimator": "inner surrogate: pgt, lvc, dice or likelihood_ratio",
    "inner_lr": "inner step size α (initial value if learned)",
    "learn_inner_lr": "learn a per-parameter step size with the outer optimizer (Meta-SGD style)",
    "outer_objective": "outer surrogate: log_likelihood, ratio, clip or dice",
    "optimizer": "outer optimizer: adam or trpo",
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
    "control_variate": "TMAML control variate added to DiCE: none, meta (Alg. 1) or task (Eq. 11, "
                       "action-dependent)",
    "cv_formula": "control-variate surrogate: corrected (unbiased, EST-6) or paper (Eq. 7 as printed, EST-5)",
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
}

# --------------------------------------------------------------------------------- presets

_PROMP = dict(inner_estimator="likelihood_ratio", outer_objective="clip", optimizer="adam",
              outer_steps=5, clip_eps=0.3, kl_coef=5e-4, adaptive_kl=False, target_kl=0.01)
_TRPO = dict(outer_objective="ratio", optimizer="trpo", max_kl=0.01)
_VPG = dict(outer_objective="log_likelihood", optimizer="adam", outer_steps=1, outer_lr=1e-3)

PRESETS: dict[str, dict[str, Any]] = {
    "promp": _PROMP,
    "maml-trpo": dict(_TRPO, inner_estimator="pgt"),
    "maml-vpg": dict(_VPG, inner_estimator="pgt"),
    "emaml-trpo": dict(_TRPO, inner_estimator="pgt", emaml=True),
    "emaml-vpg": dict(_VPG, inner_estimator="pgt", emaml=True),
    "lvc-trpo": dict(_TRPO, inner_estimator="likelihood_ratio"),
    "lvc-vpg": dict(_VPG, inner_estimator="likelihood_ratio"),
    "dice-vpg": dict(_VPG, inner_estimator="dice", outer_objective="dice"),
    "tmaml-meta-cv": dict(_PROMP, inner_estimator="dice", control_variate="meta"),
    "tmaml-task-cv": dict(_PROMP, inner_estimator="dice", control_variate="task"),
}
"""Algorithm → composition (ProMP Table 1 values; reference §7.6 for the paper-label mapping)."""

PRESET_DESCRIPTIONS: dict[str, str] = {
    "promp": "ProMP: J^LR inner step, clipped outer ratio + η·KL inner penalty, 5 Adam steps",
    "maml-trpo": "MAML-TRPO: PGT (log-likelihood) inner step, TRPO outer step (original RL-MAML)",
    "maml-vpg": "MAML-VPG: PGT inner step, one Adam step on log-likelihood × advantage",
    "emaml-trpo": "E-MAML-TRPO: MAML-TRPO + E-MAML pre-update credit term (formulation II)",
    "emaml-vpg": "E-MAML-VPG: MAML-VPG + E-MAML pre-update credit term",
    "lvc-trpo": "LVC-TRPO: LVC (likelihood-ratio) inner step, TRPO outer step",
    "lvc-vpg": "LVC-VPG: LVC inner step, one Adam step",
    "dice-vpg": "DiCE-VPG: DiCE in the inner and the outer objective, one Adam step",
    "tmaml-meta-cv": "TMAML: DiCE + meta-learned control variate (Alg. 1) inner step, PPO-style outer step",
    "tmaml-task-cv": "TMAML: DiCE + per-task action-dependent control variate (Eq. 11), PPO-style outer step",
}

# Per-environment settings of the paper runs (ProMP App. D.2; reference §9.2 for the released
# sweeps). Keys are canonical family names; ``promp`` entries apply to ProMP only.
PAPER_ENV_SETTINGS: dict[str, dict[str, Any]] = {
    "PointCorners": dict(inner_steps=3, horizon=100),
    "PointMomentum": dict(inner_steps=3, horizon=200, promp=dict(hidden_sizes=(128, 128))),
    "HalfCheetahRandDirec": dict(horizon=100),
    "HalfCheetahRandVel": dict(horizon=100),
    "AntRandDirec": dict(horizon=100),
    "AntRandDirec2D": dict(horizon=100),
    "AntRandGoal": dict(horizon=200, inner_steps=2),
    "Walker2DRandDirec": dict(horizon=200),
    "Walker2DRandVel": dict(horizon=200),
    "HumanoidRandDirec": dict(horizon=200, hidden_sizes=(128, 128)),
    "HumanoidRandDirec2D": dict(horizon=200, hidden_sizes=(128, 128)),
    "HopperRandParams": dict(horizon=200, inner_lr=0.05,
                             promp=dict(outer_steps=3, adaptive_kl=True, kl_coef=1e-3, target_kl=1e-2)),
    "Walker2DRandParams": dict(horizon=200, inner_lr=0.05,
                               promp=dict(outer_steps=3, adaptive_kl=True, kl_coef=1e-3, target_kl=1e-2)),
}

# TMAML's task distributions (TMAML §5.1, spec ENV-6/8, ISS-8) as env options of our families.
TMAML_ENV_OPTIONS: dict[str, dict[str, Any]] = {
    "HalfCheetahRandVel": {"velocity_range": [0.0, 2.0]},
    "Walker2DRandVel": {"velocity_range": [0.0, 2.0]},
    "SwimmerRandVel": {"velocity_range": [0.0, 2.0]},
    "AntRandGoal": {"goal_distribution": "square", "goal_radius": 3.0},
}


def tmaml_table1_settings(env: str) -> dict[str, Any]:
    """TMAML App. E Table 1 (spec HP-2) for canonical family ``env``, as config overrides.

    64² policy (Humanoid 128²), one adaptation step (AntRandGoal two), α = 0.01, β = 0.001,
    α' = β' = 0.01 (plain gradient steps, as Alg. 1), 40 tasks × 20 trajectories, 5 gradient
    steps per iteration, clip ε = 0.3, KL η = 0.0005, trajectory length 100 in every environment,
    and TMAML's task distributions.
    """
    settings: dict[str, Any] = dict(
        inner_lr=0.01, outer_lr=1e-3, hidden_sizes=(64, 64), inner_steps=1, cv_inner_lr=0.01,
        cv_lr=0.01, cv_optimizer="sgd", tasks_per_iter=40, rollouts_per_task=20, outer_steps=5, clip_eps=0.3,
        kl_coef=5e-4, horizon=100)
    if env.startswith("Humanoid"):
        settings["hidden_sizes"] = (128, 128)
    if env == "AntRandGoal":
        settings["inner_steps"] = 2
    if env in TMAML_ENV_OPTIONS:
        settings["env_options"] = dict(TMAML_ENV_OPTIONS[env])
    return settings


PRESET_KINDS = ("default", "paper")

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def paper_settings(algo: str, env: str) -> dict[str, Any]:
    """The paper's per-environment settings for ``algo`` on canonical family ``env``."""
    settings = dict(PAPER_ENV_SETTINGS.get(env, {}))
    algo_specific = settings.pop("promp", {})
    if algo == "promp":
        settings.update(algo_specific)
    return settings


def _coerce(name: str, value: Any) -> Any:
    """Convert ``value`` (from YAML or a ``--set`` string) to the type of field ``name``."""
    default = _FIELDS[name].default
    if default is dataclasses.MISSING:
        default = ""
    if name in ("hidden_sizes", "cv_hidden_sizes"):
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


def parse_int_list(text: str, what: str) -> list[int]:
    """``"0,1,2"`` → ``[0, 1, 2]``; a clear error naming the option ``what`` otherwise."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{what} expects integers separated by commas, e.g. 0,1,2; got {text!r}.") from None
    if not values:
        raise ConfigError(f"{what} is empty; give integers separated by commas, e.g. 0,1,2.")
    return values


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """``["inner_lr=0.05", "env_options.reward_type=dense"]`` → overrides (values as strings;
    env options parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}.")
        if key.startswith("env_options."):
            out.setdefault("env_options", {})[key.split(".", 1)[1]] = yaml.safe_load(value)
        else:
            out[key] = value
    return out


def _check(config: TrainConfig) -> TrainConfig:
    """Validate ranges and names; one clear message per mistake."""
    choices = {"inner_estimator": INNER_ESTIMATORS, "outer_objective": OUTER_OBJECTIVES,
               "optimizer": OPTIMIZERS, "baseline": BASELINES, "loss_reduction": LOSS_REDUCTIONS,
               "control_variate": CONTROL_VARIATES, "cv_formula": CV_FORMULAS, "policy": POLICIES,
               "cv_optimizer": CV_OPTIMIZERS}
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
    if not 0 < config.backtrack_ratio < 1:
        raise ConfigError(f"backtrack_ratio must be in (0, 1), got {config.backtrack_ratio}.")
    if config.control_variate != "none" and config.inner_estimator != "dice":
        raise ConfigError(f"control_variate={config.control_variate} needs inner_estimator=dice "
                          f"(TMAML adds the control variate to DiCE), got {config.inner_estimator}.")
    if config.control_variate != "none" and config.rollouts_per_task < 2:
        raise ConfigError("a control variate needs rollouts_per_task ≥ 2 (it is fitted on one half "
                          "of a task's trajectories and used on the other).")
    if config.grad_stats_every < 0 or config.grad_stats_batches < 2:
        raise ConfigError("grad_stats_every must be ≥ 0 (0 = off) and grad_stats_batches ≥ 2, got "
                          f"{config.grad_stats_every} and {config.grad_stats_batches}.")
    for name in ("cv_inner_lr", "cv_lr"):
        if not getattr(config, name) >= 0:
            raise ConfigError(f"{name} must be ≥ 0, got {getattr(config, name)}.")
    if not math.isfinite(config.inner_lr):
        raise ConfigError(f"inner_lr must be finite, got {config.inner_lr}.")
    return config


def build_config(algo: str, env: str, *, preset: str = "default",
                 overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Resolve ``algo`` on ``env``: preset composition, paper per-env settings when
    ``preset="paper"``, then ``overrides`` (``--set``). The horizon is resolved to a number."""
    from adaptrl.envs import canonical_name, make

    if algo not in PRESETS:
        raise unknown_name_error("algorithm", algo, PRESETS)
    if preset not in PRESET_KINDS:
        raise unknown_name_error("preset", preset, PRESET_KINDS)
    env = canonical_name(env)
    values: dict[str, Any] = dict(PRESETS[algo])
    if preset == "paper":
        values.update(tmaml_table1_settings(env) if algo.startswith("tmaml") else paper_settings(algo, env))
    for key, value in (overrides or {}).items():
        if key not in _FIELDS or key in ("algo", "env"):
            raise unknown_name_error("setting", key, [k for k in _FIELDS if k not in ("algo", "env")])
        if key == "env_options":
            values["env_options"] = {**values.get("env_options", {}), **_coerce(key, value)}
        else:
            values[key] = value
    values = {k: _coerce(k, v) for k, v in values.items()}
    config = _check(TrainConfig(algo=algo, env=env, **values))
    if config.horizon == 0:
        probe = make(env, **config.env_options)
        try:
            config = dataclasses.replace(config, horizon=probe.spec.horizon)
        finally:
            probe.close()
    return config


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from a ``config.yaml`` mapping (validated)."""
    unknown = [k for k in data if k not in _FIELDS]
    if unknown:
        raise ConfigError(f"config has unknown keys {unknown}; valid keys: {', '.join(_FIELDS)}.")
    missing = [k for k in ("algo", "env") if k not in data]
    if missing:
        raise ConfigError(f"config lacks {missing}.")
    values = {k: _coerce(k, v) for k, v in data.items() if k not in ("algo", "env")}
    return _check(TrainConfig(algo=str(data["algo"]), env=str(data["env"]), **values))
