"""Planning and training the runs of a reproduction (:mod:`adaptrl.experiment.campaigns`).

Run ``LABEL-sSEED`` of a reproduction at ``--scale F`` is exactly
``build_config(algo, env, preset="paper", overrides={**overrides, "seed": SEED,
"iterations": N})`` where ``overrides`` are the experiment's shared settings, then the label's own,
then ``--set``, and ``N = max(1, round(F * full_iterations))`` — or, for an experiment with a
real-step budget, the fewest iterations whose full-length episodes reach ``F`` × that budget
(:func:`budget_iterations`); so a run started by hand with the printed ``adaptrl train`` command
into the same folder is recognised as the same run.

Resuming. Runs are trained seed by seed (every label of seed 0, then of seed 1, …). Rerunning the
same command continues where it stopped: a run whose ``config.yaml`` matches and whose
``progress.csv`` has all its rows is skipped, a run with a checkpoint and fewer rows is resumed from
that checkpoint (Ctrl-C writes one; otherwise one is written every ``checkpoint_every``
iterations), and a folder holding a run of another configuration is an error (choose another
``--out`` or delete the folder), so results of different recipes never mix. A run that diverges is
reported and the others go on. ``plot_experiment`` (``--plot-only``) redraws the figure and the
summary from whatever runs exist (of any length), ``plan_experiment`` (``--dry-run``) says what
would be trained. There is no lock between processes: do not start a reproduction on runs another
process is still training (a run with a checkpoint would be resumed by both); planning or plotting
is safe meanwhile.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from adaptrl.algorithms import ALGORITHMS
from adaptrl.errors import AdaptrlError, ConfigError, require_positive_int, unknown_name_error
from adaptrl.experiment.campaign_output import count_rows, describe_run, write_outputs
from adaptrl.experiment.campaigns import (
    DEFAULT_OUT,
    ExperimentSpec,
    PlannedRun,
    ReproduceResult,
    RunSpec,
    format_setting,
    get_experiment,
)
from adaptrl.experiment.checkpoints import has_checkpoint
from adaptrl.experiment.config import add_override, build_config
from adaptrl.experiment.rundir import CONFIG_FILE, PROGRESS_FILE, load_run_config
from adaptrl.experiment.trainer import TrainingDiverged, train
from adaptrl.meta.config import TrainConfig

_RESERVED = {"seed": "the seeds come from --seeds / --seed-list",
             "iterations": "the iterations are the experiment's budget times --scale"}


@dataclass
class RunOutcome:
    """What training one run ended with: ``"finished"``, ``"interrupted"`` or ``"diverged"``."""

    run_dir: str
    status: str
    rows: int
    message: str = ""


# ------------------------------------------------------------------------------------ recipe
def scaled_iterations(full: int, scale: float) -> int:
    """``max(1, round(full * scale))`` for a finite ``scale > 0``."""
    return max(1, round(full * check_scale(scale)))


def check_scale(scale: float) -> float:
    """``scale`` when it is a finite number > 0 (a clear error otherwise)."""
    number = isinstance(scale, int | float) and not isinstance(scale, bool)
    if not (number and math.isfinite(scale) and scale > 0):
        raise ConfigError(f"scale must be a positive number (the fraction of the paper's budget to "
                          f"train, e.g. 0.2), got {scale!r}.")
    return scale


def real_steps_per_iteration(config: TrainConfig) -> tuple[int, int]:
    """Real environment steps of ``config``'s first and of each later iteration, counting every
    episode at full length (``n_timesteps`` is lower when episodes terminate early).

    Model-based algorithms (the ``model`` settings group) collect whole episodes covering
    ``initial_random_steps``, then ``real_steps_per_iter``; the meta-learner samples
    ``tasks_per_iter × rollouts_per_task`` episodes for each of its ``inner_steps + 1`` policies.
    """
    if "model" in ALGORITHMS[config.algo].settings:
        def episodes(steps: int) -> int:
            return max(1, math.ceil(steps / config.horizon)) * config.horizon
        return episodes(config.initial_random_steps), episodes(config.real_steps_per_iter)
    episodes_per_iteration = config.tasks_per_iter * config.rollouts_per_task * (config.inner_steps + 1)
    return episodes_per_iteration * config.horizon, episodes_per_iteration * config.horizon


def budget_iterations(config: TrainConfig, real_steps: float) -> int:
    """The fewest iterations of ``config`` whose real steps (:func:`real_steps_per_iteration`) reach
    ``real_steps``: ``1 + ceil((real_steps − first) / later)``, at least 1."""
    first, later = real_steps_per_iteration(config)
    return 1 + max(0, math.ceil((real_steps - first) / later))


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


def select_envs(exp: ExperimentSpec, envs: Sequence[str] | None) -> list[str]:
    """The environments of ``exp`` to train (all of them when ``envs`` is None), in registry order."""
    if envs is None:
        return list(exp.envs)
    if not envs:
        raise ConfigError(f"--envs is empty; environments of {exp.name}: {', '.join(exp.envs)}.")
    for env in envs:
        if env not in exp.envs:
            raise unknown_name_error(f"environment of {exp.name}", env, exp.envs)
    return [env for env in exp.envs if env in envs]


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


def run_overrides(exp: ExperimentSpec, spec: RunSpec, env: str,
                  overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Shared settings, then the run's overrides, then the user's (``--set``); no seed/iterations."""
    overrides = dict(overrides or {})
    for key, why in _RESERVED.items():
        if key in overrides:
            raise ConfigError(f"cannot --set {key} in a reproduction: {why}.")
    shared = exp.settings(env) if exp.settings is not None else {}
    return _merge(shared, spec.overrides, overrides)


SCOPE_SEPARATOR = ":"
"""``--set ALGO:KEY=VALUE`` sets KEY for the runs of algorithm ALGO only."""


def scoped_settings(exp: ExperimentSpec, overrides: Mapping[str, Any] | None, algo: str,
                    trained: bool) -> dict[str, Any]:
    """The ``--set`` settings of one run of algorithm ``algo``.

    Plain keys apply to the runs being trained (``trained``); keys ``ALGO:KEY`` apply to every run
    of algorithm ALGO, trained or only drawn, so that one set of flags describes a reproduction
    whose runs of one algorithm were changed (e.g. a reduced ME-TRPO next to the paper's MB-MPO)
    in every command: training other labels, resuming and ``--plot-only``. ``ALGO:env_options.K``
    sets one env option. An ALGO that no run of ``exp`` uses is a :class:`ConfigError`."""
    algos = sorted({spec.algo for spec in exp.runs})
    plain: dict[str, Any] = {}
    scoped: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        scope, sep, setting = key.partition(SCOPE_SEPARATOR)
        if not sep:
            plain[key] = value
            continue
        if scope not in algos:
            raise ConfigError(f"--set {key}=…: no run of {exp.name} uses algorithm {scope!r}; its "
                              f"algorithms are {', '.join(algos)}.")
        if not setting:
            raise ConfigError(f"--set {key}=…: give a setting after {scope}{SCOPE_SEPARATOR}, e.g. "
                              f"{scope}{SCOPE_SEPARATOR}rollouts_per_task=50.")
        if scope == algo:
            add_override(scoped, setting, value)
    return _merge(plain if trained else {}, scoped)


def run_iterations(exp: ExperimentSpec, spec: RunSpec, env: str, scale: float,
                   overrides: Mapping[str, Any] | None = None) -> int:
    """Iterations of run ``spec`` on ``env`` at ``scale``: the scaled iterations, or the fewest that
    reach the scaled real-step budget (the run's own, else the experiment's)."""
    if exp.iterations is not None:
        return scaled_iterations(exp.iterations, scale)
    budget = spec.real_steps if spec.real_steps is not None else exp.real_steps
    settings = run_overrides(exp, spec, env, overrides)
    probe = build_config(spec.algo, env, preset=exp.preset, overrides=settings)
    return budget_iterations(probe, budget * check_scale(scale))


def run_config(exp: ExperimentSpec, spec: RunSpec, seed: int, iterations: int,
               overrides: Mapping[str, Any] | None = None, env: str | None = None) -> TrainConfig:
    """The configuration of run ``spec`` on ``env`` (default: the first) with ``seed`` for
    ``iterations`` iterations."""
    env = env or exp.envs[0]
    values = {**run_overrides(exp, spec, env, overrides), "seed": seed, "iterations": iterations}
    return build_config(spec.algo, env, preset=exp.preset, overrides=values)


def run_dir_of(out: str | Path, exp: ExperimentSpec, label: str, seed: int, env: str | None = None) -> Path:
    """``out/NAME/LABEL-sSEED``, or ``out/NAME/ENV/LABEL-sSEED`` for an experiment on several
    environments."""
    base = Path(out) / exp.name
    if len(exp.envs) > 1:
        base = base / (env or exp.envs[0])
    return base / f"{label}-s{seed}"


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, str) and yaml.safe_load(value) == value:
        return value
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


def set_flags(key: str, value: Any, scope: str = "") -> list[str]:
    """The ``--set [SCOPE:]KEY=VALUE`` arguments that give a run the setting ``key = value``
    (an ``env_options`` mapping as one ``env_options.OPTION=VALUE`` per option)."""
    prefix = f"{scope}{SCOPE_SEPARATOR}" if scope else ""
    if key == "env_options" and isinstance(value, Mapping):
        return [arg for option, option_value in value.items()
                for arg in ("--set", f"{prefix}env_options.{option}={_yaml_scalar(option_value)}")]
    return ["--set", f"{prefix}{key}={format_setting(value)}"]


def train_command(exp: ExperimentSpec, spec: RunSpec, seed: int, iterations: int,
                  overrides: Mapping[str, Any] | None, run_dir: str | Path, env: str | None = None) -> str:
    """The ``adaptrl train`` command line that trains exactly this run into ``run_dir``."""
    env = env or exp.envs[0]
    args = ["adaptrl", "train", spec.algo, "--env", env, "--preset", exp.preset, "--seed", str(seed),
            "--iterations", str(iterations)]
    for key, value in run_overrides(exp, spec, env, overrides).items():
        args += set_flags(key, value)
    args += ["--out", str(run_dir)]
    return shlex.join(args)


# ------------------------------------------------------------------------------------- state
_OPERATIONAL = ("checkpoint_every", "snapshot_every")
"""Settings that change when files are written, not what is learned: a run differing only in them
is the same run."""


def _differences(existing: TrainConfig, wanted: TrainConfig, ignore: Sequence[str] = ()) -> list[str]:
    have, want = existing.to_dict(), wanted.to_dict()
    return [k for k in want if k not in (*ignore, *_OPERATIONAL) and have.get(k) != want[k]]


_UNSCOPED = {*_RESERVED, "algo", "env"}
"""Keys no ``--set ALGO:KEY`` can describe: a drawn run differing in one gets the plain conflict error."""


def _conflict_error(run_dir: Path, existing: TrainConfig, wanted: TrainConfig, keys: list[str],
                    full_iterations: int | None, drawn: bool = False) -> ConfigError:
    have, want = existing.to_dict(), wanted.to_dict()
    diffs = "; ".join(f"{k}: {have.get(k)!r} there, {want[k]!r} here" for k in keys)
    if drawn and not set(keys) & _UNSCOPED:
        flags = shlex.join([arg for k in keys for arg in set_flags(k, have.get(k), existing.algo)])
        return ConfigError(f"{run_dir} holds a run of another configuration ({diffs}). This command only "
                           f"draws it, so pass the settings it was trained with, scoped to its algorithm "
                           f"(--set ALGO:KEY=VALUE applies to trained and drawn runs alike): {flags}; or "
                           f"choose another --out.")
    hint = ""
    if keys == ["iterations"] and full_iterations:
        hint = (f" It was trained with --scale {existing.iterations / full_iterations:g}: pass that "
                f"--scale to use it.")
    elif keys == ["iterations"]:
        hint = " It was trained with another --scale: pass that --scale to use it."
    return ConfigError(f"{run_dir} holds a run of another configuration ({diffs}).{hint} Choose another "
                       f"--out, or delete {run_dir} to train it again with this recipe.")


def inspect_run(run_dir: Path, config: TrainConfig, full_iterations: int | None,
                drawn: bool = False) -> tuple[str, int]:
    """``(status, rows)`` of ``run_dir`` for ``config`` (see :class:`PlannedRun`); a folder holding a
    run of another configuration raises :class:`ConfigError` naming the differing keys. A run the
    command only ``drawn`` counts at any length, and its error names the scoped ``--set`` flags
    that describe it."""
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
    keys = _differences(existing, config, ("iterations",) if drawn else ())
    if keys:
        raise _conflict_error(run_dir, existing, config, keys, full_iterations, drawn)
    rows = count_rows(run_dir)
    target = existing.iterations if drawn else config.iterations
    if rows >= target:
        return "done", rows
    if has_checkpoint(run_dir):
        return "resume", rows
    if rows == 0 and not (run_dir / PROGRESS_FILE).exists():
        return "new", 0
    return "stalled", rows


def plan_experiment(name: str, *, seeds: int | Sequence[int] | None = None, scale: float = 1.0,
                    out: str | Path = DEFAULT_OUT, overrides: Mapping[str, Any] | None = None,
                    ignore_iterations: bool = False, envs: Sequence[str] | None = None,
                    train_labels: Sequence[str] | None = None,
                    train_envs: Sequence[str] | None = None) -> list[PlannedRun]:
    """Every run of reproduction ``name`` (all labels of the environments ``envs``, default all;
    seed-major order) with its config, folder, equivalent command and status. Raises
    :class:`ConfigError` when a folder holds a run of another configuration (with
    ``ignore_iterations``, runs of any length count as this recipe). Runs outside
    ``train_labels`` × ``train_envs`` (when given; ``--only``, ``--envs``) are not trained, only
    drawn, so for them a run of any length counts, and plain ``overrides`` (``--set KEY=VALUE``)
    apply only to the trained runs (a setting another label's algorithm lacks is then no error);
    ``ALGO:KEY`` overrides apply to every run of ALGO (:func:`scoped_settings`)."""
    exp = get_experiment(name)
    seed_list = resolve_seeds(seeds, exp.seeds)
    env_list = select_envs(exp, envs)
    check_scale(scale)
    def is_trained(spec: RunSpec, env: str) -> bool:
        return ((train_labels is None or spec.label in train_labels)
                and (train_envs is None or env in train_envs))

    def own_overrides(spec: RunSpec, env: str) -> Mapping[str, Any]:
        return scoped_settings(exp, overrides, spec.algo, is_trained(spec, env))

    iterations = {(env, spec.label): run_iterations(exp, spec, env, scale, own_overrides(spec, env))
                  for env in env_list for spec in exp.runs}
    planned = []
    for seed in seed_list:
        for env in env_list:
            for spec in exp.runs:
                n = iterations[env, spec.label]
                trained, settings = is_trained(spec, env), own_overrides(spec, env)
                config = run_config(exp, spec, seed, n, settings, env)
                run_dir = run_dir_of(out, exp, spec.label, seed, env)
                drawn = ignore_iterations or not trained
                status, rows = inspect_run(run_dir, config, exp.iterations, drawn)
                command = train_command(exp, spec, seed, n, settings, run_dir, env)
                title = f"{spec.label} on {env}" if len(exp.envs) > 1 else spec.label
                planned.append(PlannedRun(spec.label, spec.algo, seed, config, run_dir, status, rows, command,
                                          env, title))
    return planned


# ---------------------------------------------------------------------------------- training
def train_run(config: TrainConfig, run_dir: str, resume: bool, show_progress: bool = False) -> RunOutcome:
    """Train one run (fresh or resumed) with TensorBoard and plots; a divergence is an outcome."""
    try:
        result = train(config, run_dir, resume=resume, show_progress=show_progress, tensorboard=True,
                       make_plots=True)
    except TrainingDiverged as e:
        return RunOutcome(str(run_dir), "diverged", count_rows(run_dir), str(e))
    return RunOutcome(str(run_dir), "interrupted" if result.interrupted else "finished", count_rows(run_dir))


def run_sequential(todo: Sequence[PlannedRun], show_progress: bool,
                   log: Callable[[str], None]) -> list[RunOutcome]:
    """Train ``todo`` one after another in this process; stops after an interrupted run."""
    outcomes = []
    for i, run in enumerate(todo, 1):
        log(f"[{i}/{len(todo)}] {describe_run(run)} → {run.run_dir}")
        outcome = train_run(run.config, str(run.run_dir), run.status == "resume", show_progress)
        outcomes.append(outcome)
        if outcome.status == "interrupted":
            break
    return outcomes


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`ConfigError` saying how to install it."""
    try:
        import ray
    except ImportError as e:
        raise ConfigError("running the runs in parallel needs Ray, which is not installed: "
                          "pip install 'adaptrl[ray]' (or run them one after another without --ray "
                          "and with --workers 1).") from e
    return ray


def start_ray(ray: Any, *, workers: int, address: str | None, cpus_per_run: float) -> None:
    """``ray.init``: a new local cluster when ``address`` is None (of ``ceil(workers × cpus_per_run)``
    CPUs when ``workers > 1``, else all of this machine's; without the dashboard), otherwise the
    cluster at ``address`` (``"auto"``: the one ``ray start`` started on this machine). A cluster that
    cannot be reached is a :class:`ConfigError`."""
    if address is None:
        cpus = {"num_cpus": math.ceil(workers * cpus_per_run)} if workers > 1 else {}
        ray.init(address="local", include_dashboard=False, **cpus)
        return
    try:
        ray.init(address=address)
    except (ConnectionError, ValueError) as e:
        raise ConfigError(f"cannot connect to a Ray cluster at --ray-address {address} ({e}). Start one "
                          f"(ray start --head) or leave out --ray-address to run on a local cluster.") from e


def ray_failure(ray: Any, run: PlannedRun, error: Exception) -> AdaptrlError:
    """One error naming ``run`` for the Ray ``error`` its task ended with: the run's own error
    (its message, a :class:`ConfigError` staying one) rather than Ray's remote traceback."""
    cause = error.cause if isinstance(error, ray.exceptions.RayTaskError) else error
    message = str(cause) if isinstance(cause, AdaptrlError) else f"{type(cause).__name__}: {cause}"
    kind = ConfigError if isinstance(cause, ConfigError) else AdaptrlError
    return kind(f"{run.title or run.label} seed {run.seed} ({run.run_dir}) failed in its Ray task: {message}")


def run_ray(ray: Any, todo: Sequence[PlannedRun], *, workers: int, address: str | None,
            cpus_per_run: float, log: Callable[[str], None]) -> list[RunOutcome]:
    """Each run a Ray task of ``cpus_per_run`` CPUs; at most ``workers`` in flight when ``workers > 1``
    (otherwise the cluster's free CPUs decide). Tasks get absolute run paths, so on a multi-machine
    cluster ``out`` must be on a filesystem every node shares. Ray started here (:func:`start_ray`;
    an already initialised Ray is used as it is) is shut down after. A run whose task fails stops the
    campaign with one error naming it (:func:`ray_failure`); the runs still in flight are cancelled."""
    started = not ray.is_initialized()
    if started:
        start_ray(ray, workers=workers, address=address, cpus_per_run=cpus_per_run)
    try:
        task = ray.remote(num_cpus=cpus_per_run)(train_run)
        limit = workers if workers > 1 else len(todo)
        queue, pending, outcomes = list(todo), {}, []
        while queue or pending:
            while queue and len(pending) < limit:
                run = queue.pop(0)
                log(f"submitted {describe_run(run)} → {run.run_dir}")
                ref = task.remote(run.config, str(run.run_dir.resolve()), run.status == "resume", False)
                pending[ref] = run
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                run = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as e:
                    for other in pending:
                        ray.cancel(other)
                    raise ray_failure(ray, run, e) from e
                outcome.run_dir = str(run.run_dir)
                outcomes.append(outcome)
                log(f"{run.title or run.label} seed {run.seed}: {outcome.status} ({outcome.rows} rows)")
        return outcomes
    finally:
        if started:
            ray.shutdown()


def run_experiment(name: str, *, seeds: int | Sequence[int] | None = None, scale: float = 1.0,
                   out: str | Path = DEFAULT_OUT, overrides: Mapping[str, Any] | None = None,
                   workers: int = 1, use_ray: bool = False, ray_address: str | None = None,
                   cpus_per_run: float = 1.0, show_progress: bool = True, only: Sequence[str] | None = None,
                   envs: Sequence[str] | None = None,
                   log: Callable[[str], None] | None = None) -> ReproduceResult:
    """Train the missing runs of reproduction ``name`` and draw its comparison figure and summary.

    ``seeds``: a count ``n`` (seeds 0…n-1; default the experiment's) or explicit seeds; ``scale``:
    fraction of the paper's iterations; ``overrides``: settings applied to every run (``--set``);
    ``only``: labels to train, ``envs``: environments (the figure shows every label and environment
    that has runs). Runs go one after another
    in this process, or as Ray tasks with ``use_ray`` or ``workers > 1`` (``ray_address`` None = a
    local cluster; ``cpus_per_run`` CPUs each). ``log`` receives one line per run. A diverged run is
    listed in ``failed`` and the others go on; Ctrl-C stops with ``interrupted=True`` (rerun to resume).
    """
    exp = get_experiment(name)
    labels = select_labels(exp, only)
    workers = require_positive_int("workers", workers)
    if not (isinstance(cpus_per_run, int | float) and cpus_per_run > 0):
        raise ConfigError(f"cpus_per_run must be a positive number, got {cpus_per_run!r}.")
    ray = import_ray() if use_ray or workers > 1 else None
    log = log or (lambda message: None)
    env_list = select_envs(exp, envs)
    planned = plan_experiment(name, seeds=seeds, scale=scale, out=out, overrides=overrides,
                              train_labels=labels, train_envs=env_list)
    selected = [run for run in planned if run.label in labels and run.env in env_list]
    stalled = [run for run in selected if run.status == "stalled"]
    if stalled:
        where = ", ".join(f"{run.run_dir} ({run.rows}/{run.config.iterations} rows)" for run in stalled)
        raise ConfigError(f"{where}: progress without a checkpoint; the run is still being trained by "
                          "another process (wait for it) or stopped before its first checkpoint (delete "
                          "the folder to train it again).")
    for run in selected:
        if run.status == "done":
            log(f"{describe_run(run)}, skipped")
    todo = [run for run in selected if run.status != "done"]
    if ray is not None and todo:
        outcomes = run_ray(ray, todo, workers=workers, address=ray_address, cpus_per_run=cpus_per_run,
                           log=log)
    else:
        outcomes = run_sequential(todo, show_progress, log)
    result = ReproduceResult(exp.name, Path(out) / exp.name, planned)
    result.trained = [Path(o.run_dir) for o in outcomes if o.status == "finished"]
    result.failed = {Path(o.run_dir): o.message for o in outcomes if o.status == "diverged"}
    result.interrupted = any(o.status == "interrupted" for o in outcomes)
    if not result.interrupted:
        write_outputs(exp, result)
    return result


def plot_experiment(name: str, *, seeds: int | Sequence[int] | None = None, scale: float = 1.0,
                    out: str | Path = DEFAULT_OUT, overrides: Mapping[str, Any] | None = None,
                    envs: Sequence[str] | None = None) -> ReproduceResult:
    """Redraw the comparison figure and summary of ``name`` from the runs that exist (of any
    length; ``scale`` only sets the iterations written into ``commands.txt``), of the
    environments ``envs`` only when given (``--envs``; default all)."""
    exp = get_experiment(name)
    planned = plan_experiment(name, seeds=seeds, scale=scale, out=out, overrides=overrides,
                              ignore_iterations=True, envs=envs)
    result = ReproduceResult(exp.name, Path(out) / exp.name, planned)
    if not any(run.rows for run in planned):
        raise ConfigError(f"no run of {name} has progress in {result.out_dir} yet: train them with "
                          f"adaptrl reproduce {name} (see --dry-run).")
    write_outputs(exp, result)
    return result
