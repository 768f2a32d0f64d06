"""The papers' experiments as named sets of runs (``adaptrl reproduce --list``).

A reproduction (an entry of :data:`EXPERIMENTS`) is a list of labelled runs — an algorithm preset
plus overrides — trained for several seeds on one or more environments with the paper's settings
(``build_config(algo, env, preset="paper", overrides=...)``), then compared in one figure.
Its budget is either a number of ``iterations`` (the meta-RL papers) or a number of ``real_steps``
(the model-based thesis, whose curves are against real environment steps): each run then trains
the fewest iterations whose real steps reach it, so methods that sample 4,000 or 10,000 steps per
iteration are compared at the same amount of data. ``adaptrl reproduce NAME --out OUT`` writes::

    OUT/NAME/LABEL-sSEED/    one ordinary run directory per label and seed (OUT/NAME/ENV/LABEL-sSEED
                             when the experiment has several environments), exactly what
                             ``adaptrl train`` writes (config.yaml, progress.csv, tensorboard/,
                             checkpoints/, plots/); ``adaptrl eval``/``plot`` work on it
    OUT/NAME/comparison.png  one panel per environment and plotted progress.csv column, one curve per
                             label: mean ± std across seeds against the mean environment steps,
                             each label cut to its shortest seed
    OUT/NAME/summary.csv     per environment and label: seeds, final iteration and environment steps,
                             final pre- and post-update average return and the final reported return
                             (mean and population std across seeds), the real steps at which the
                             seed-mean curve first reaches the stated target return and the yardstick
                             label's final return, and the latter's ratio to the yardstick's own count,
                             wall-clock seconds (sum over the seeds' runs)
    OUT/NAME/commands.txt    the equivalent ``adaptrl train`` command of every run

Planning and training live in :mod:`adaptrl.experiment.campaign_runner`, the figure, summary and
texts in :mod:`adaptrl.experiment.campaign_output`. This module holds the registry and the records
the other two share (:class:`PlannedRun`, :class:`ReproduceResult`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptrl.algorithms.tmaml import tmaml_table1_settings
from adaptrl.errors import unknown_name_error
from adaptrl.meta.config import TrainConfig

DEFAULT_OUT = "reproductions"
PRE_KEY = "Step_0-AverageReturn"
POST_KEY = "Step_{K}-AverageReturn"
"""Plot-key template: ``{K}`` becomes the runs' number of adaptation steps (``inner_steps``)."""
RETURN_KEY = "{return}"
"""Plot-key template: each run's reported real return (its algorithm's
:attr:`~adaptrl.algorithms.base.AlgorithmSpec.reported_return`), so one panel compares the
real returns of algorithms that log them in different columns."""


@dataclass(frozen=True)
class RunSpec:
    """One curve of a reproduction: ``label`` (its folder name prefix), an algorithm preset and
    overrides applied on top of the paper settings; ``real_steps`` replaces the experiment's
    real-step budget for this label (the model-free yardsticks need far more data)."""

    label: str
    algo: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    real_steps: int | None = None


@dataclass(frozen=True)
class ExperimentSpec:
    """A named experiment of the papers: ``runs`` × seeds on ``env`` (one name or several) for
    ``iterations`` or, when ``real_steps`` is given, for the iterations that reach that many real
    environment steps.

    ``keys`` are the plotted ``progress.csv`` columns (``{K}`` = number of adaptation steps,
    ``{return}`` = each run's reported real return); ``settings(env)``, if given, returns overrides
    shared by every run (applied before each run's own). The summary's sample-efficiency columns
    count the real steps to reach ``targets[env]`` and the final return of the ``yardstick`` label
    (the thesis's "reaches the model-free asymptote with N× less data").
    """

    name: str
    description: str
    paper: str
    env: str | tuple[str, ...]
    runs: tuple[RunSpec, ...]
    iterations: int | None = None
    real_steps: int | None = None
    keys: tuple[str, ...] = (PRE_KEY, POST_KEY)
    seeds: int = 3
    preset: str = "paper"
    settings: Callable[[str], Mapping[str, Any]] | None = None
    targets: Mapping[str, float] = field(default_factory=dict)
    yardstick: str | None = None

    def __post_init__(self) -> None:
        if (self.iterations is None) == (self.real_steps is None):
            raise ValueError(f"{self.name}: give exactly one budget, iterations or real_steps")
        if self.yardstick is not None and self.yardstick not in self.labels:
            raise ValueError(f"{self.name}: yardstick {self.yardstick!r} is not one of {self.labels}")

    @property
    def envs(self) -> tuple[str, ...]:
        """The environments, in registry order."""
        return (self.env,) if isinstance(self.env, str) else tuple(self.env)

    @property
    def labels(self) -> list[str]:
        return [run.label for run in self.runs]

    def budget(self) -> str:
        """The full-scale budget in words, e.g. ``600 iterations`` or ``100,000 real steps``."""
        if self.real_steps is None:
            return f"{self.iterations} iterations"
        own = [f"{run.label} {run.real_steps:,}" for run in self.runs if run.real_steps is not None]
        return f"{self.real_steps:,} real steps" + (f" ({', '.join(own)})" if own else "")

    def run(self, label: str) -> RunSpec:
        """The run labelled ``label`` (a clear error listing the labels otherwise)."""
        for run in self.runs:
            if run.label == label:
                return run
        raise unknown_name_error("label", label, self.labels)


#: The model-based methods' real-step budget (the done-when of the MB-MPO reproduction: return
#: ≥ 500 on HalfCheetah within 100k steps) and the model-free yardstick's, 50× more (thesis Fig. 7
#: puts TRPO's asymptote at 10⁶–10⁷ steps).
_MB_STEPS = 100_000
_MF_STEPS = 5_000_000
# The original code's biased-model experiment changed two MB-MPO settings from its main preset:
# inner step size 0.01 (fast_lr) and models without weight normalisation (docs/reproductions.md,
# "Thesis Fig. 10").
_FIG10_SETTINGS = {"mb-mpo": {"inner_lr": 0.01, "model_weight_norm": False}}
_FIG4_OVERRIDES = {"tasks_per_iter": 20, "rollouts_per_task": 40, "grad_stats_every": 10,
                   "grad_stats_batches": 10}

EXPERIMENTS: dict[str, ExperimentSpec] = {
    "promp-fig2": ExperimentSpec(
        name="promp-fig2",
        description="ProMP against MAML-TRPO and E-MAML-TRPO: pre- and post-update average return",
        paper="ProMP (Rothfuss et al., ICLR 2019), Fig. 2, HalfCheetahRandDirec panel",
        env="HalfCheetahRandDirec", iterations=600,
        runs=(RunSpec("promp", "promp"), RunSpec("maml-trpo", "maml-trpo"),
              RunSpec("emaml-trpo", "emaml-trpo"))),
    "promp-fig3": ExperimentSpec(
        name="promp-fig3",
        description="meta-gradient estimators with a VPG outer step: LVC, DiCE, MAML (PGT), E-MAML",
        paper="ProMP (Rothfuss et al., ICLR 2019), Fig. 3, HalfCheetahRandDirec panel",
        env="HalfCheetahRandDirec", iterations=600,
        runs=(RunSpec("lvc-vpg", "lvc-vpg"), RunSpec("dice-vpg", "dice-vpg"),
              RunSpec("maml-vpg", "maml-vpg"), RunSpec("emaml-vpg", "emaml-vpg"))),
    "promp-fig4": ExperimentSpec(
        name="promp-fig4",
        description="meta-gradient variance: relative std of the meta-gradient and returns, LVC vs DiCE",
        paper="ProMP (Rothfuss et al., ICLR 2019), Fig. 4, HalfCheetahRandDirec panel",
        env="HalfCheetahRandDirec", iterations=300,
        runs=(RunSpec("lvc-vpg", "lvc-vpg", _FIG4_OVERRIDES),
              RunSpec("dice-vpg", "dice-vpg", _FIG4_OVERRIDES)),
        keys=(PRE_KEY, POST_KEY, "Meta-GradientRStd")),
    "tmaml-table1": ExperimentSpec(
        name="tmaml-table1",
        description="TMAML control variates against LVC, MAML and DiCE on Ant forward/backward; the "
                    "summary's post-update mean ± std is the average reward at the last iteration",
        paper="TMAML (Liu et al., ICML 2019), Table 1, Ant Fwd/Back column",
        env="AntRandDirec", iterations=1000,
        runs=(RunSpec("tmaml-meta-cv", "tmaml-meta-cv"), RunSpec("tmaml-task-cv", "tmaml-task-cv"),
              RunSpec("lvc", "promp"), RunSpec("maml", "promp", {"inner_estimator": "pgt"}),
              RunSpec("dice", "promp", {"inner_estimator": "dice"})),
        settings=tmaml_table1_settings),
    "mbmpo-fig8": ExperimentSpec(
        name="mbmpo-fig8",
        description="MB-MPO against ME-TRPO and MB-MPC on five MuJoCo tasks (horizon 200), with TRPO "
                    "and PPO as the model-free yardstick: real return against real steps",
        paper="Clavera 2020 (thesis) §5.5.2, Fig. 8 (MB baselines) and §5.5.1, Fig. 7 (model-free yardstick)",
        env=("HalfCheetah", "Walker2D", "Hopper", "Ant", "Swimmer"), real_steps=_MB_STEPS,
        runs=(RunSpec("mb-mpo", "mb-mpo"), RunSpec("me-trpo", "me-trpo"), RunSpec("mb-mpc", "mb-mpc"),
              RunSpec("trpo", "trpo", real_steps=_MF_STEPS), RunSpec("ppo", "ppo", real_steps=_MF_STEPS)),
        keys=(RETURN_KEY,), targets={"HalfCheetah": 500.0}, yardstick="trpo"),
    "metrpo-fig5": ExperimentSpec(
        name="metrpo-fig5",
        description="ME-TRPO with 1, 5, 10 and 20 models on HalfCheetah: real return against real steps",
        paper="Clavera 2020 (thesis) §4.3.2, Fig. 5 (Kurutach et al. 2018, Fig. 3)",
        env="HalfCheetah", real_steps=300_000,
        # the ME-TRPO code's HalfCheetah horizon (params-half-cheetah.json; docs/model-based.md,
        # deviation 11: the preset's 200 is thesis Fig. 8's)
        runs=tuple(RunSpec(f"{k}-models", "me-trpo", {"model_members": k, "horizon": 100})
                   for k in (1, 5, 10, 20)),
        keys=(RETURN_KEY,)),
    "mbmpo-fig10": ExperimentSpec(
        name="mbmpo-fig10",
        description="biased, noisy models: every prediction + N(b, 0.1²) with b ~ U(0, b_max), b_max in "
                    "{0, 0.5, 1}; MB-MPO against ME-TRPO on HalfCheetah, horizon 100",
        paper="Clavera 2020 (thesis) §5.5.3, Fig. 10",
        env="HalfCheetah", real_steps=_MB_STEPS,
        runs=tuple(RunSpec(f"{algo}-b{b:g}", algo, {"horizon": 100, "model_output_bias_max": b,
                                                     "model_output_noise_std": 0.1,
                                                     **_FIG10_SETTINGS.get(algo, {})})
                   for algo in ("mb-mpo", "me-trpo") for b in (0.0, 0.5, 1.0)),
        keys=(RETURN_KEY,)),
    "mbmpo-fig39": ExperimentSpec(
        name="mbmpo-fig39",
        description="MB-MPO's tailored exploration (real data from the K adapted policies) against "
                    "collecting it with the pre-update policy",
        paper="Clavera 2020 (thesis) App. B.1, Fig. 39",
        env=("HalfCheetah", "Walker2D"), real_steps=_MB_STEPS,
        runs=(RunSpec("tailored", "mb-mpo", {"real_data_policy": "adapted"}),
              RunSpec("pre-update", "mb-mpo", {"real_data_policy": "pre_update"})),
        keys=(RETURN_KEY,)),
}
"""Name → reproduction (``adaptrl reproduce --list``)."""


@dataclass
class PlannedRun:
    """One run of a reproduction and what its folder holds.

    ``status``: ``"new"`` (nothing trained yet), ``"resume"`` (checkpoint, fewer rows than
    iterations), ``"done"`` (all rows), ``"stalled"`` (some rows but no checkpoint: still being
    trained elsewhere, or stopped before its first checkpoint).
    """

    label: str
    algo: str
    seed: int
    config: TrainConfig
    run_dir: Path
    status: str
    rows: int
    command: str
    env: str = ""
    title: str = ""
    """How logs name the run: its label, with the environment when the experiment has several."""


@dataclass
class ReproduceResult:
    """Result of ``run_experiment`` / ``plot_experiment`` (:mod:`adaptrl.experiment.campaign_runner`)."""

    name: str
    out_dir: Path
    runs: list[PlannedRun]
    trained: list[Path] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)
    interrupted: bool = False
    figure: Path | None = None
    summary_csv: Path | None = None
    commands_txt: Path | None = None
    summary: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def run_dirs(self) -> list[Path]:
        return [run.run_dir for run in self.runs]


def get_experiment(name: str) -> ExperimentSpec:
    """The registered reproduction ``name``."""
    if name not in EXPERIMENTS:
        raise unknown_name_error("experiment", name, EXPERIMENTS)
    return EXPERIMENTS[name]


def format_setting(value: Any) -> str:
    """``value`` as written after ``--set KEY=`` (booleans lower case, sequences comma-separated)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def format_registry() -> str:
    """Text of ``adaptrl reproduce --list``."""
    blocks = []
    for exp in EXPERIMENTS.values():
        envs = ", ".join(exp.envs)
        lines = [f"{exp.name}: {exp.description}", f"  paper:      {exp.paper}",
                 f"  env:        {envs} (preset {exp.preset}), {exp.budget()}, {exp.seeds} seeds"]
        if exp.settings is not None:
            lines.append(f"  shared:     {exp.settings.__name__.lstrip('_')}({envs}) on every run")
        lines.append(f"  plots:      {', '.join(exp.keys)}")
        if exp.targets or exp.yardstick:
            target = ", ".join(f"{env} {value:g}" for env, value in exp.targets.items())
            rest = f"the final return of {exp.yardstick}" if exp.yardstick else ""
            lines.append(f"  targets:    {'; and '.join(t for t in (target, rest) if t)}")
        for spec in exp.runs:
            extra = " ".join(f"{k}={format_setting(v)}" for k, v in spec.overrides.items())
            lines.append(f"  run {spec.label:<15} {spec.algo}{'  ' + extra if extra else ''}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
