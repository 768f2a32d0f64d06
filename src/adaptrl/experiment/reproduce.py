"""``adaptrl reproduce``: the papers' experiments as named, resumable sets of runs.

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

Run ``LABEL-sSEED`` of a reproduction at ``--scale F`` is exactly
``build_config(algo, env, preset="paper", overrides={**overrides, "seed": SEED,
"iterations": max(1, round(F * full_iterations))})`` where ``overrides`` are the experiment's
shared settings, then the label's own, then ``--set``; so a run started by hand with the printed
``adaptrl train`` command into the same folder is recognised as the same run.

Resuming. Runs are trained seed by seed (every label of seed 0, then of seed 1, …). Rerunning the
same command continues where it stopped: a run whose ``config.yaml`` matches and whose
``progress.csv`` has all its rows is skipped, a run with a checkpoint and fewer rows is resumed from
that checkpoint (Ctrl-C writes one; otherwise one is written every ``checkpoint_every``
iterations), and a folder holding a run of another configuration is an error (choose another
``--out`` or delete the folder), so results of different recipes never mix. A run that diverges is
reported and the others go on. ``--plot-only`` redraws the figure and the summary from whatever runs
exist (of any length), ``--dry-run`` prints what would be trained. There is no lock between
processes: do not start a reproduction on runs another process is still training (a run with a
checkpoint would be resumed by both); ``--dry-run`` or ``--plot-only`` are safe meanwhile.
"""

from __future__ import annotations

import argparse
import csv
import math
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from adaptrl.errors import AdaptrlError, ConfigError, require_positive_int, unknown_name_error
from adaptrl.experiment.config import (
    TrainConfig,
    build_config,
    parse_int_list,
    parse_set,
    tmaml_table1_settings,
)

DEFAULT_OUT = "reproductions"
FIGURE_FILE = "comparison.png"
SUMMARY_FILE = "summary.csv"
COMMANDS_FILE = "commands.txt"
PRE_KEY = "Step_0-AverageReturn"
POST_KEY = "Step_{K}-AverageReturn"
"""Plot-key template: ``{K}`` becomes the runs' number of adaptation steps (``inner_steps``)."""
X_KEY = "n_timesteps"
_RESERVED = {"seed": "the seeds come from --seeds / --seed-list",
             "iterations": "the iterations are the experiment's budget times --scale"}


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
class RunOutcome:
    """What training one run ended with: ``"finished"``, ``"interrupted"`` or ``"diverged"``."""

    run_dir: str
    status: str
    rows: int
    message: str = ""


@dataclass
class ReproduceResult:
    """Result of :func:`run_experiment` / :func:`plot_experiment`."""

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


# ------------------------------------------------------------------------------------ recipe
def get_experiment(name: str) -> ExperimentSpec:
    """The registered reproduction ``name``."""
    if name not in EXPERIMENTS:
        raise unknown_name_error("experiment", name, EXPERIMENTS)
    return EXPERIMENTS[name]


def scaled_iterations(full: int, scale: float) -> int:
    """``max(1, round(full * scale))`` for a finite ``scale > 0``."""
    number = isinstance(scale, int | float) and not isinstance(scale, bool)
    if not (number and math.isfinite(scale) and scale > 0):
        raise ConfigError(f"scale must be a positive number (the fraction of the paper's iterations to "
                          f"train, e.g. 0.2), got {scale!r}.")
    return max(1, round(full * scale))


def resolve_seeds(seeds: int | Sequence[int] | None, default: int = 3) -> list[int]:
    """A count ``n`` → ``[0, …, n-1]``; an explicit list is checked (integers ≥ 0, no repeats)."""
    if seeds is None:
        seeds = default
    if isinstance(seeds, int | float) and not isinstance(seeds, bool):
        return list(range(require_positive_int("seeds", seeds)))
    seed_list = list(seeds)
    if not seed_list:
        raise ConfigError("the seed list is empty: give at least one seed, e.g. 0,1,2.")
    for seed in seed_list:
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ConfigError(f"seeds must be integers ≥ 0, got {seed!r} in {seed_list}.")
    if len(set(seed_list)) != len(seed_list):
        raise ConfigError(f"the seed list {seed_list} repeats a seed; give each seed once.")
    return [int(s) for s in seed_list]


def select_labels(exp: ExperimentSpec, only: Sequence[str] | None) -> list[str]:
    """The labels of ``exp`` to train (all of them when ``only`` is None), in registry order."""
    if only is None:
        return exp.labels
    if not only:
        raise ConfigError(f"--only is empty; valid labels of {exp.name}: {', '.join(exp.labels)}.")
    for label in only:
        exp.run(label)
    return [label for label in exp.labels if label in only]


def _merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win; ``env_options`` mappings are merged key by key."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key == "env_options" and isinstance(value, Mapping):
                out["env_options"] = {**out.get("env_options", {}), **value}
            else:
                out[key] = value
    return out


def run_overrides(exp: ExperimentSpec, spec: RunSpec,
                  overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Shared settings, then the run's overrides, then the user's (``--set``); no seed/iterations."""
    overrides = dict(overrides or {})
    for key, why in _RESERVED.items():
        if key in overrides:
            raise ConfigError(f"cannot --set {key} in a reproduction: {why}.")
    shared = exp.settings(exp.env) if exp.settings is not None else {}
    return _merge(shared, spec.overrides, overrides)


def run_config(exp: ExperimentSpec, spec: RunSpec, seed: int, iterations: int,
               overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """The configuration of run ``spec`` with ``seed`` for ``iterations`` iterations."""
    values = {**run_overrides(exp, spec, overrides), "seed": seed, "iterations": iterations}
    return build_config(spec.algo, exp.env, preset=exp.preset, overrides=values)


def run_dir_of(out: str | Path, name: str, label: str, seed: int) -> Path:
    """``out/name/label-sSEED``."""
    return Path(out) / name / f"{label}-s{seed}"


def _set_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, str) and yaml.safe_load(value) == value:
        return value
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


def train_command(exp: ExperimentSpec, spec: RunSpec, seed: int, iterations: int,
                  overrides: Mapping[str, Any] | None, run_dir: str | Path) -> str:
    """The ``adaptrl train`` command line that trains exactly this run into ``run_dir``."""
    args = ["adaptrl", "train", spec.algo, "--env", exp.env, "--preset", exp.preset, "--seed", str(seed),
            "--iterations", str(iterations)]
    for key, value in run_overrides(exp, spec, overrides).items():
        if key == "env_options" and isinstance(value, Mapping):
            for option, option_value in value.items():
                args += ["--set", f"env_options.{option}={_yaml_scalar(option_value)}"]
        else:
            args += ["--set", f"{key}={_set_value(value)}"]
    args += ["--out", str(run_dir)]
    return shlex.join(args)


# ------------------------------------------------------------------------------------- state
def count_rows(run_dir: str | Path) -> int:
    """Data rows of ``run_dir/progress.csv`` (0 when it is missing)."""
    from adaptrl.experiment.trainer import PROGRESS_FILE
    from adaptrl.plots import read_progress

    if not (Path(run_dir) / PROGRESS_FILE).is_file():
        return 0
    progress = read_progress(run_dir)
    return len(next(iter(progress.values())))


def _differences(existing: TrainConfig, wanted: TrainConfig, ignore: Sequence[str] = ()) -> list[str]:
    have, want = existing.to_dict(), wanted.to_dict()
    return [k for k in want if k not in ignore and have.get(k) != want[k]]


def _conflict_error(run_dir: Path, existing: TrainConfig, wanted: TrainConfig, keys: list[str],
                    full_iterations: int) -> ConfigError:
    have, want = existing.to_dict(), wanted.to_dict()
    diffs = "; ".join(f"{k}: {have.get(k)!r} there, {want[k]!r} here" for k in keys)
    hint = ""
    if keys == ["iterations"]:
        hint = (f" It was trained with --scale {existing.iterations / full_iterations:g}: pass that "
                f"--scale to use it.")
    return ConfigError(f"{run_dir} holds a run of another configuration ({diffs}).{hint} Choose another "
                       f"--out, or delete {run_dir} to train it again with this recipe.")


def inspect_run(run_dir: Path, config: TrainConfig, full_iterations: int,
                ignore_iterations: bool = False) -> tuple[str, int]:
    """``(status, rows)`` of ``run_dir`` for ``config`` (see :class:`PlannedRun`); a folder holding a
    run of another configuration raises :class:`ConfigError` naming the differing keys."""
    from adaptrl.experiment.checkpoints import has_checkpoint
    from adaptrl.experiment.trainer import CONFIG_FILE, PROGRESS_FILE, load_run_config

    if not (run_dir / CONFIG_FILE).is_file():
        if (run_dir / PROGRESS_FILE).exists() or has_checkpoint(run_dir):
            raise ConfigError(f"{run_dir} holds training output but no {CONFIG_FILE}; choose another "
                              f"--out or delete {run_dir}.")
        return "new", 0
    try:
        existing = load_run_config(run_dir)
    except ConfigError as e:
        raise ConfigError(f"{run_dir} holds a run whose {CONFIG_FILE} cannot be used ({e}); choose "
                          f"another --out or delete {run_dir}.") from e
    keys = _differences(existing, config, ("iterations",) if ignore_iterations else ())
    if keys:
        raise _conflict_error(run_dir, existing, config, keys, full_iterations)
    rows = count_rows(run_dir)
    target = existing.iterations if ignore_iterations else config.iterations
    if rows >= target:
        return "done", rows
    if has_checkpoint(run_dir):
        return "resume", rows
    if rows == 0 and not (run_dir / PROGRESS_FILE).exists():
        return "new", 0
    return "stalled", rows


def plan_experiment(name: str, *, seeds: int | Sequence[int] | None = None, scale: float = 1.0,
                    out: str | Path = DEFAULT_OUT, overrides: Mapping[str, Any] | None = None,
                    ignore_iterations: bool = False) -> list[PlannedRun]:
    """Every run of reproduction ``name`` (all labels, seed-major order) with its config, folder,
    equivalent command and status. Raises :class:`ConfigError` when a folder holds a run of another
    configuration (with ``ignore_iterations``, runs of any length count as this recipe)."""
    exp = get_experiment(name)
    seed_list = resolve_seeds(seeds, exp.seeds)
    iterations = scaled_iterations(exp.iterations, scale)
    planned = []
    for seed in seed_list:
        for spec in exp.runs:
            config = run_config(exp, spec, seed, iterations, overrides)
            run_dir = run_dir_of(out, exp.name, spec.label, seed)
            status, rows = inspect_run(run_dir, config, exp.iterations, ignore_iterations)
            command = train_command(exp, spec, seed, iterations, overrides, run_dir)
            planned.append(PlannedRun(spec.label, spec.algo, seed, config, run_dir, status, rows, command))
    return planned


# ---------------------------------------------------------------------------------- training
def train_run(config: TrainConfig, run_dir: str, resume: bool, show_progress: bool = False) -> RunOutcome:
    """Train one run (fresh or resumed) with TensorBoard and plots; a divergence is an outcome."""
    from adaptrl.experiment.trainer import TrainingDiverged, train

    try:
        result = train(config, run_dir, resume=resume, show_progress=show_progress, tensorboard=True,
                       make_plots=True)
    except TrainingDiverged as e:
        return RunOutcome(str(run_dir), "diverged", count_rows(run_dir), str(e))
    return RunOutcome(str(run_dir), "interrupted" if result.interrupted else "finished", count_rows(run_dir))


def _describe(run: PlannedRun) -> str:
    what = {"new": "new", "resume": f"resume at {run.rows}/{run.config.iterations}",
            "done": f"done ({run.rows}/{run.config.iterations})",
            "stalled": f"stalled at {run.rows}/{run.config.iterations}, no checkpoint"}[run.status]
    return f"{run.label} seed {run.seed}: {what}"


def _run_sequential(todo: list[PlannedRun], show_progress: bool,
                    log: Callable[[str], None]) -> list[RunOutcome]:
    outcomes = []
    for i, run in enumerate(todo, 1):
        log(f"[{i}/{len(todo)}] {_describe(run)} → {run.run_dir}")
        outcome = train_run(run.config, str(run.run_dir), run.status == "resume", show_progress)
        outcomes.append(outcome)
        if outcome.status == "interrupted":
            break
    return outcomes


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ConfigError("running the runs in parallel needs Ray, which is not installed: "
                          "pip install 'adaptrl[ray]' (or run them one after another without --ray "
                          "and with --workers 1).") from e
    return ray


def _run_ray(ray: Any, todo: list[PlannedRun], *, workers: int, address: str | None, cpus_per_run: float,
             log: Callable[[str], None]) -> list[RunOutcome]:
    """Each run a Ray task of ``cpus_per_run`` CPUs; at most ``workers`` in flight when ``workers > 1``
    (otherwise the cluster's free CPUs decide). Tasks get absolute run paths, so on a multi-machine
    cluster ``out`` must be on a filesystem every node shares. A local cluster started here is shut
    down after."""
    started = not ray.is_initialized()
    if started:
        local = address is None and workers > 1
        ray.init(address=address, **({"num_cpus": math.ceil(workers * cpus_per_run)} if local else {}))
    try:
        task = ray.remote(num_cpus=cpus_per_run)(train_run)
        limit = workers if workers > 1 else len(todo)
        queue, pending, outcomes = list(todo), {}, []
        while queue or pending:
            while queue and len(pending) < limit:
                run = queue.pop(0)
                log(f"submitted {_describe(run)} → {run.run_dir}")
                ref = task.remote(run.config, str(run.run_dir.resolve()), run.status == "resume", False)
                pending[ref] = run
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                run = pending.pop(ref)
                outcome = ray.get(ref)
                outcome.run_dir = str(run.run_dir)
                outcomes.append(outcome)
                log(f"{run.label} seed {run.seed}: {outcome.status} ({outcome.rows} rows)")
        return outcomes
    finally:
        if started:
            ray.shutdown()


def run_experiment(name: str, *, seeds: int | Sequence[int] | None = None, scale: float = 1.0,
                   out: str | Path = DEFAULT_OUT, overrides: Mapping[str, Any] | None = None,
                   workers: int = 1, use_ray: bool = False, ray_address: str | None = None,
                   cpus_per_run: float = 1.0, show_progress: bool = True, only: Sequence[str] | None = None,
                   log: Callable[[str], None] | None = None) -> ReproduceResult:
    """Train the missing runs of reproduction ``name`` and draw its comparison figure and summary.

    ``seeds``: a count ``n`` (seeds 0…n-1; default the experiment's) or explicit seeds; ``scale``:
    fraction of the paper's iterations; ``overrides``: settings applied to every run (``--set``);
    ``only``: labels to train (the figure shows every label that has runs). Runs go one after another
    in this process, or as Ray tasks with ``use_ray`` or ``workers > 1`` (``ray_address`` None = a
    local cluster; ``cpus_per_run`` CPUs each). ``log`` receives one line per run. A diverged run is
    listed in ``failed`` and the others go on; Ctrl-C stops with ``interrupted=True`` (rerun to resume).
    """
    exp = get_experiment(name)
    labels = select_labels(exp, only)
    workers = require_positive_int("workers", workers)
    if not (isinstance(cpus_per_run, int | float) and cpus_per_run > 0):
        raise ConfigError(f"cpus_per_run must be a positive number, got {cpus_per_run!r}.")
    ray = _import_ray() if use_ray or workers > 1 else None
    log = log or (lambda message: None)
    planned = plan_experiment(name, seeds=seeds, scale=scale, out=out, overrides=overrides)
    selected = [run for run in planned if run.label in labels]
    stalled = [run for run in selected if run.status == "stalled"]
    if stalled:
        where = ", ".join(f"{run.run_dir} ({run.rows}/{run.config.iterations} rows)" for run in stalled)
        raise ConfigError(f"{where}: progress without a checkpoint; the run is still being trained by "
                          "another process (wait for it) or stopped before its first checkpoint (delete "
                          "the folder to train it again).")
    for run in selected:
        if run.status == "done":
            log(f"{_describe(run)}, skipped")
    todo = [run for run in selected if run.status != "done"]
    if ray is not None and todo:
        outcomes = _run_ray(ray, todo, workers=workers, address=ray_address, cpus_per_run=cpus_per_run,
                            log=log)
    else:
        outcomes = _run_sequential(todo, show_progress, log)
    result = ReproduceResult(exp.name, Path(out) / exp.name, planned)
    result.trained = [Path(o.run_dir) for o in outcomes if o.status == "finished"]
    result.failed = {Path(o.run_dir): o.message for o in outcomes if o.status == "diverged"}
    result.interrupted = any(o.status == "interrupted" for o in outcomes)
    if not result.interrupted:
        write_outputs(exp, result)
    return result


def plot_experiment(name: str, *, seeds: int | Sequence[int] | None = None, scale: float = 1.0,
                    out: str | Path = DEFAULT_OUT,
                    overrides: Mapping[str, Any] | None = None) -> ReproduceResult:
    """Redraw the comparison figure and summary of ``name`` from the runs that exist (of any
    length; ``scale`` only sets the iterations written into ``commands.txt``)."""
    exp = get_experiment(name)
    planned = plan_experiment(name, seeds=seeds, scale=scale, out=out, overrides=overrides,
                              ignore_iterations=True)
    result = ReproduceResult(exp.name, Path(out) / exp.name, planned)
    if not any(run.rows for run in planned):
        raise ConfigError(f"no run of {name} has progress in {result.out_dir} yet: train them with "
                          f"adaptrl reproduce {name} (see --dry-run).")
    write_outputs(exp, result)
    return result


# ----------------------------------------------------------------------------------- outputs
def write_outputs(exp: ExperimentSpec, result: ReproduceResult) -> None:
    """Write ``commands.txt``, ``comparison.png`` and ``summary.csv`` of ``result``'s runs that have
    at least one row; fills ``result``'s paths, summary rows and notes."""
    from adaptrl.plots import read_run

    out_dir = result.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    result.commands_txt = write_commands(exp, result.runs, out_dir / COMMANDS_FILE)
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in result.runs:
        if count_rows(run.run_dir) > 0:
            groups.setdefault(run.label, []).append(read_run(run.run_dir))
    if not groups:
        result.notes.append(f"no run of {exp.name} has progress yet; nothing to draw.")
        return
    result.summary = summarize(groups)
    result.summary_csv = write_summary(result.summary, out_dir / SUMMARY_FILE)
    keys = plot_keys(exp, groups, result.notes)
    if keys:
        from adaptrl.plots import plot_groups

        result.figure = plot_groups({label: [run["dir"] for run in runs] for label, runs in groups.items()},
                                    keys=keys, out=out_dir / FIGURE_FILE, x_key=X_KEY,
                                    title=f"{exp.name}: {exp.paper}")


def plot_keys(exp: ExperimentSpec, groups: Mapping[str, list[dict[str, Any]]], notes: list[str]) -> list[str]:
    """``exp.keys`` with ``{K}`` filled in, without the columns some run lacks (noted in ``notes``)."""
    ks = {int(run["config"].get("inner_steps", 1)) for runs in groups.values() for run in runs}
    if len(ks) != 1 and any("{K}" in key for key in exp.keys):
        raise ConfigError(f"the runs of {exp.name} adapt a different number of steps ({sorted(ks)}); "
                          "their post-update curves cannot share a panel.")
    k = ks.pop()
    keys = []
    for key in (template.replace("{K}", str(k)) for template in exp.keys):
        missing = [str(run["dir"]) for runs in groups.values() for run in runs if key not in run["progress"]]
        if missing:
            notes.append(f"progress column {key!r} is missing from {', '.join(missing)}; its panel is "
                         "left out.")
        else:
            keys.append(key)
    return keys


def _rows(run: Mapping[str, Any]) -> int:
    return len(next(iter(run["progress"].values())))


def _final(runs: Sequence[Mapping[str, Any]], key: str, n: int) -> tuple[float, float]:
    """Mean and population std across ``runs`` of column ``key`` at row ``n - 1`` (as in the figure)."""
    if any(key not in run["progress"] for run in runs):
        return math.nan, math.nan
    values = np.array([run["progress"][key][n - 1] for run in runs], dtype=float)
    if not np.isfinite(values).any():
        return math.nan, math.nan
    return float(np.nanmean(values)), float(np.nanstd(values))


def _last_finite(values: np.ndarray) -> float:
    finite = np.asarray(values, dtype=float)[np.isfinite(values)]
    return float(finite[-1]) if finite.size else math.nan


def summarize(groups: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One row per label: the final common row of its seeds (the figure's last point)."""
    rows = []
    for label, runs in groups.items():
        config = runs[0]["config"]
        k = int(config.get("inner_steps", 1))
        n = min(_rows(run) for run in runs)
        pre_mean, pre_std = _final(runs, PRE_KEY, n)
        post_mean, post_std = _final(runs, f"Step_{k}-AverageReturn", n)
        steps, _ = _final(runs, X_KEY, n)
        itr = runs[0]["progress"].get("Itr")
        rows.append({
            "label": label, "algo": config.get("algo", ""), "env": config.get("env", ""),
            "seeds": " ".join(str(run["config"].get("seed", "?")) for run in runs),
            "complete": sum(_rows(run) >= int(run["config"].get("iterations", 0)) for run in runs),
            "iterations": int(max(run["config"].get("iterations", 0) for run in runs)),
            "final_itr": int(itr[n - 1]) if itr is not None else n - 1,
            "n_timesteps": steps, "inner_steps": k,
            "pre_update_mean": pre_mean, "pre_update_std": pre_std,
            "post_update_mean": post_mean, "post_update_std": post_std,
            "wall_clock_s": float(sum(_last_finite(run["progress"].get("Time", np.array([math.nan])))
                                      for run in runs)),
        })
    return rows


def write_summary(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """``rows`` as CSV (floats at full precision)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_commands(exp: ExperimentSpec, runs: Sequence[PlannedRun], path: Path) -> Path:
    """The equivalent ``adaptrl train`` command of every run, after a commented header."""
    iterations = runs[0].config.iterations if runs else exp.iterations
    seeds = sorted({run.seed for run in runs})
    lines = [f"# {exp.name}: {exp.description}", f"# {exp.paper}; {exp.env}",
             f"# {iterations} of {exp.iterations} iterations, seeds {' '.join(map(str, seeds))}; "
             "each command trains one run directory (rerun `adaptrl reproduce` to resume them all)",
             *(run.command for run in runs)]
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------------------ CLI
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
            extra = " ".join(f"{k}={_set_value(v)}" for k, v in spec.overrides.items())
            lines.append(f"  run {spec.label:<15} {spec.algo}{'  ' + extra if extra else ''}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def format_plan(exp: ExperimentSpec, planned: Sequence[PlannedRun], out: str | Path) -> str:
    """Text of ``--dry-run``: each run's status and equivalent command."""
    iterations = planned[0].config.iterations
    seeds = sorted({run.seed for run in planned})
    labels = len({run.label for run in planned})
    lines = [f"{exp.name}: {_plural(labels, 'label')} × {_plural(len(seeds), 'seed')}, {iterations} of "
             f"{exp.iterations} iterations each → {Path(out) / exp.name}"]
    for run in planned:
        action = {"new": "train", "resume": "resume", "done": "skip", "stalled": "blocked"}[run.status]
        lines += [f"  {_describe(run)} [{action}]", f"    {run.command}"]
    return "\n".join(lines)


REPRODUCE_DESCRIPTION = (
    "Reproduce a named experiment of the papers: train every labelled run for each seed into "
    "OUT/NAME/LABEL-sSEED (ordinary run directories), then draw OUT/NAME/comparison.png (mean ± std "
    "across seeds per label), OUT/NAME/summary.csv (final pre-/post-update return mean and std, "
    "environment steps, wall-clock) and OUT/NAME/commands.txt (the equivalent `adaptrl train` "
    "commands). Rerunning the same command skips finished runs and resumes interrupted ones from "
    "their checkpoints; a folder holding another configuration is an error. --list shows the "
    "experiments.")


def add_reproduce_parser(verbs: Any) -> argparse.ArgumentParser:
    """Add the ``reproduce`` verb to ``verbs`` (an argparse subparsers object); returns its parser."""
    parser = verbs.add_parser("reproduce", help="reproduce an experiment of the papers",
                              description=REPRODUCE_DESCRIPTION)
    parser.add_argument("name", nargs="?", metavar="NAME",
                        help=f"experiment: {', '.join(EXPERIMENTS)} (see --list)")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--seeds", type=int, default=None, metavar="N",
                        help="seeds 0..N-1 (default 3)")
    parser.add_argument("--seed-list", default=None, metavar="S,S,...", help="explicit seeds, e.g. 0,1,2")
    parser.add_argument("--scale", type=float, default=1.0, metavar="F",
                        help="train round(F × the paper's iterations) iterations, at least 1 (default 1)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"root folder (default {DEFAULT_OUT})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting of every run (repeatable); see adaptrl train --help")
    parser.add_argument("--only", default=None, metavar="LABEL,...", help="train only these labels")
    parser.add_argument("--ray", action="store_true", help="run each run as a Ray task (pip install "
                        "'adaptrl[ray]')")
    parser.add_argument("--ray-address", default=None, metavar="ADDRESS",
                        help="Ray cluster address (default: a local cluster)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="at most N runs at once (N > 1 uses Ray; default 1)")
    parser.add_argument("--cpus-per-run", type=float, default=1.0, metavar="C",
                        help="CPUs Ray reserves per run (default 1)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print each run, its status and its `adaptrl train` command; train nothing")
    parser.add_argument("--plot-only", action="store_true",
                        help="only redraw comparison.png and summary.csv from the existing runs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _cli_seeds(args: argparse.Namespace) -> int | list[int] | None:
    if args.seed_list is not None and args.seeds is not None:
        raise ConfigError("give either --seeds N or --seed-list S,S,..., not both.")
    if args.seed_list is not None:
        return parse_int_list(args.seed_list, "--seed-list")
    return args.seeds


def _print_summary(result: ReproduceResult) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if result.summary:
        table = Table(title=f"{result.name}: final iteration, mean ± std across seeds")
        for col in ("label", "seeds", "itr", "env steps", "pre-update", "post-update", "wall-clock"):
            table.add_column(col, justify="left" if col == "label" else "right")
        for row in result.summary:
            table.add_row(row["label"], row["seeds"], f"{row['final_itr'] + 1}/{row['iterations']}",
                          f"{row['n_timesteps']:.3g}",
                          f"{row['pre_update_mean']:.2f} ± {row['pre_update_std']:.2f}",
                          f"{row['post_update_mean']:.2f} ± {row['post_update_std']:.2f}",
                          f"{row['wall_clock_s']:.0f} s")
        console.print(table)
    for note in result.notes:
        console.print(f"note: {note}")
    written = [p for p in (result.figure, result.summary_csv, result.commands_txt) if p is not None]
    if written:
        console.print("wrote " + ", ".join(str(p) for p in written))


def cmd_reproduce(args: argparse.Namespace) -> None:
    """Run the ``reproduce`` verb parsed by :func:`add_reproduce_parser`."""
    if args.list:
        print(format_registry())
        return
    if not args.name:
        raise ConfigError(f"reproduce needs NAME, one of {', '.join(EXPERIMENTS)} (or --list).")
    exp = get_experiment(args.name)
    seeds = _cli_seeds(args)
    overrides = parse_set(args.set)
    only = None if args.only is None else [label.strip() for label in args.only.split(",") if label.strip()]
    labels = select_labels(exp, only)
    scaled_iterations(exp.iterations, args.scale)
    if args.dry_run:
        planned = plan_experiment(exp.name, seeds=seeds, scale=args.scale, out=args.out, overrides=overrides)
        print(format_plan(exp, [run for run in planned if run.label in labels], args.out))
        return
    if args.plot_only:
        _print_summary(plot_experiment(exp.name, seeds=seeds, scale=args.scale, out=args.out,
                                       overrides=overrides))
        return
    from rich.console import Console

    console = Console(stderr=True)
    result = run_experiment(exp.name, seeds=seeds, scale=args.scale, out=args.out, overrides=overrides,
                            workers=args.workers, use_ray=args.ray, ray_address=args.ray_address,
                            cpus_per_run=args.cpus_per_run, show_progress=not args.no_progress, only=only,
                            log=console.print)
    if result.interrupted:
        console.print(f"interrupted: checkpoint written; rerun the same command to resume {exp.name}.")
        raise KeyboardInterrupt
    _print_summary(result)
    if result.failed:
        raise AdaptrlError(f"{len(result.failed)} run(s) diverged (the others finished): "
                           + " | ".join(f"{path}: {message}" for path, message in result.failed.items()))
