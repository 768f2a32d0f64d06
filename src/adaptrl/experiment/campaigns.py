"""The papers' experiments as named sets of runs (``adaptrl reproduce --list``).

A reproduction (an entry of :data:`EXPERIMENTS`) is a list of labelled runs — an algorithm preset
plus overrides — trained for several seeds on one task family with the paper's settings
(``build_config(algo, env, preset="paper", overrides=...)``), then compared in one figure.
``adaptrl reproduce NAME --out OUT`` writes::

    OUT/NAME/LABEL-sSEED/    one ordinary run directory per label and seed, exactly what
                             ``adaptrl train`` writes (config.yaml, progress.csv, tensorboard/,
                             checkpoints/, plots/); ``adaptrl eval``/``plot`` work on it
    OUT/NAME/comparison.png  one panel per plotted progress.csv column, one curve per label:
                             mean ± std across seeds against the mean environment steps,
                             each label cut to its shortest seed
    OUT/NAME/summary.csv     per label: seeds, final iteration and environment steps, final pre- and
                             post-update average return (mean and population std across seeds),
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


@dataclass(frozen=True)
class RunSpec:
    """One curve of a reproduction: ``label`` (its folder name prefix), an algorithm preset and
    overrides applied on top of the paper settings."""

    label: str
    algo: str
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExperimentSpec:
    """A named experiment of the papers: ``runs`` × seeds on ``env`` for ``iterations``.

    ``keys`` are the plotted ``progress.csv`` columns (``{K}`` = number of adaptation steps);
    ``settings(env)``, if given, returns overrides shared by every run (applied before each run's own).
    """

    name: str
    description: str
    paper: str
    env: str
    iterations: int
    runs: tuple[RunSpec, ...]
    keys: tuple[str, ...] = (PRE_KEY, POST_KEY)
    seeds: int = 3
    preset: str = "paper"
    settings: Callable[[str], Mapping[str, Any]] | None = None

    @property
    def labels(self) -> list[str]:
        return [run.label for run in self.runs]

    def run(self, label: str) -> RunSpec:
        """The run labelled ``label`` (a clear error listing the labels otherwise)."""
        for run in self.runs:
            if run.label == label:
                return run
        raise unknown_name_error("label", label, self.labels)


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
        lines = [f"{exp.name}: {exp.description}", f"  paper:      {exp.paper}",
                 f"  env:        {exp.env} (preset {exp.preset}), {exp.iterations} iterations, "
                 f"{exp.seeds} seeds"]
        if exp.settings is not None:
            lines.append(f"  shared:     {exp.settings.__name__.lstrip('_')}({exp.env}) on every run")
        lines.append(f"  plots:      {', '.join(exp.keys)}")
        for spec in exp.runs:
            extra = " ".join(f"{k}={format_setting(v)}" for k, v in spec.overrides.items())
            lines.append(f"  run {spec.label:<15} {spec.algo}{'  ' + extra if extra else ''}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
