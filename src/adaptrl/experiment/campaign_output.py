"""What a reproduction writes and prints: ``comparison.png``, ``summary.csv``, ``commands.txt`` and
the ``--dry-run`` plan (layout in :mod:`adaptrl.experiment.campaigns`)."""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adaptrl.algorithms import ALGORITHMS
from adaptrl.algorithms.base import final_step_return
from adaptrl.experiment.campaigns import (
    POST_KEY,
    PRE_KEY,
    RETURN_KEY,
    ExperimentSpec,
    PlannedRun,
    ReproduceResult,
)
from adaptrl.experiment.rundir import PROGRESS_FILE
from adaptrl.plots import plot_panels, read_progress, read_run

FIGURE_FILE = "comparison.png"
SUMMARY_FILE = "summary.csv"
COMMANDS_FILE = "commands.txt"
X_KEY = "n_timesteps"


def count_rows(run_dir: str | Path) -> int:
    """Data rows of ``run_dir/progress.csv`` (0 when it is missing)."""
    if not (Path(run_dir) / PROGRESS_FILE).is_file():
        return 0
    progress = read_progress(run_dir)
    return len(next(iter(progress.values())))


def describe_run(run: PlannedRun) -> str:
    """``LABEL seed N: STATUS`` with the rows done, e.g. ``promp seed 0: resume at 1/2``."""
    what = {"new": "new", "resume": f"resume at {run.rows}/{run.config.iterations}",
            "done": f"done ({run.rows}/{run.config.iterations})",
            "stalled": f"stalled at {run.rows}/{run.config.iterations}, no checkpoint"}[run.status]
    return f"{run.title or run.label} seed {run.seed}: {what}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _budget_text(exp: ExperimentSpec, runs: Sequence[PlannedRun]) -> str:
    """``2 of 600 iterations each``, or for a real-step budget the iterations each label trains."""
    if exp.iterations is not None:
        iterations = runs[0].config.iterations if runs else exp.iterations
        return f"{iterations} of {exp.iterations} iterations each"
    per_label: dict[str, set[int]] = {}
    for run in runs:
        per_label.setdefault(run.label, set()).add(run.config.iterations)
    counts = ", ".join(f"{label} {'/'.join(map(str, sorted(n)))}" for label, n in per_label.items())
    return f"{exp.budget()} at full scale; iterations: {counts}"


def format_plan(exp: ExperimentSpec, planned: Sequence[PlannedRun], out: str | Path) -> str:
    """Text of ``--dry-run``: each run's status and equivalent command."""
    seeds = sorted({run.seed for run in planned})
    labels = len({run.label for run in planned})
    envs = len({run.env for run in planned})
    where = f" × {_plural(envs, 'environment')}" if len(exp.envs) > 1 else ""
    lines = [f"{exp.name}: {_plural(labels, 'label')}{where} × {_plural(len(seeds), 'seed')}, "
             f"{_budget_text(exp, planned)} → {Path(out) / exp.name}"]
    for run in planned:
        action = {"new": "train", "resume": "resume", "done": "skip", "stalled": "blocked"}[run.status]
        lines += [f"  {describe_run(run)} [{action}]", f"    {run.command}"]
    return "\n".join(lines)


def write_outputs(exp: ExperimentSpec, result: ReproduceResult) -> None:
    """Write ``commands.txt``, ``comparison.png`` and ``summary.csv`` of ``result``'s runs that have
    at least one row; fills ``result``'s paths, summary rows and notes."""
    out_dir = result.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    result.commands_txt = write_commands(exp, result.runs, out_dir / COMMANDS_FILE)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in result.runs:
        if count_rows(run.run_dir) > 0:
            groups.setdefault((run.env or exp.envs[0], run.label), []).append(read_run(run.run_dir))
    if not groups:
        result.notes.append(f"no run of {exp.name} has progress yet; nothing to draw.")
        return
    result.summary = summarize(groups, exp)
    result.summary_csv = write_summary(result.summary, out_dir / SUMMARY_FILE)
    panels = plot_panels_of(exp, groups, result.notes)
    if panels:
        result.figure = plot_panels(panels, out=out_dir / FIGURE_FILE, x_key=X_KEY,
                                    title=f"{exp.name}: {exp.paper}",
                                    log_x=any(spec.real_steps is not None for spec in exp.runs))


def resolve_key(template: str, config: Mapping[str, Any]) -> str:
    """Plot-key ``template`` for a run with ``config``: ``{K}`` → its ``inner_steps``, ``{return}`` →
    its algorithm's reported return column (:attr:`AlgorithmSpec.reported_return`)."""
    if template == RETURN_KEY:
        algo = config.get("algo", "")
        return ALGORITHMS[algo].reported_return(config) if algo in ALGORITHMS else final_step_return(config)
    return template.replace("{K}", str(int(config.get("inner_steps", 1))))


def _panel_title(template: str, column: str) -> str:
    if template == RETURN_KEY:
        return "real return"
    if template == PRE_KEY:
        return "pre-update"
    if template == POST_KEY:
        return "post-update"
    return column


def plot_panels_of(exp: ExperimentSpec, groups: Mapping[tuple[str, str], list[dict[str, Any]]],
                   notes: list[str]) -> list[tuple[str, dict[str, tuple[list[dict[str, Any]], str]]]]:
    """One panel per environment (with runs) and ``exp.keys`` template, each curve a label with the
    column its runs log; a panel some run lacks the column of is left out (noted in ``notes``)."""
    panels = []
    for env in dict.fromkeys(env for env, _ in groups):
        for template in exp.keys:
            curves = {label: (runs, resolve_key(template, runs[0]["config"]))
                      for (run_env, label), runs in groups.items() if run_env == env}
            missing = [f"{run['dir']} ({column})" for runs, column in curves.values() for run in runs
                       if column not in run["progress"]]
            title = _panel_title(template, next(iter(curves.values()))[1])
            if len(exp.envs) > 1:
                title = f"{env}: {title}"
            if missing:
                notes.append(f"panel {title!r}: its progress column is missing from {', '.join(missing)}; "
                             "the panel is left out.")
            else:
                panels.append((title, curves))
    return panels


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


def steps_to_reach(runs: Sequence[Mapping[str, Any]], key: str, target: float) -> float:
    """The mean real steps (``n_timesteps``) at the first row where the seed-mean of ``key`` is at
    least ``target`` (on the rows all seeds have); nan when it never is."""
    if math.isnan(target) or any(key not in run["progress"] for run in runs):
        return math.nan
    n = min(_rows(run) for run in runs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows where every seed is nan stay nan
        mean, steps = (np.nanmean(np.stack([np.asarray(run["progress"][column][:n], dtype=float)
                                            for run in runs]), axis=0) for column in (key, X_KEY))
    reached = np.flatnonzero(mean >= target)
    return float(steps[reached[0]]) if reached.size else math.nan


def summarize(groups: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]],
              exp: ExperimentSpec | None = None) -> list[dict[str, Any]]:
    """One row per environment and label: the final common row of its seeds (the figure's last
    point), the final reported return, and the real steps to reach the stated target
    (``exp.targets[env]``) and the yardstick label's final return (:func:`_add_sample_efficiency`)."""
    rows = []
    for (env, label), runs in groups.items():
        config = runs[0]["config"]
        k = int(config.get("inner_steps", 1))
        n = min(_rows(run) for run in runs)
        pre_mean, pre_std = _final(runs, PRE_KEY, n)
        post_mean, post_std = _final(runs, f"Step_{k}-AverageReturn", n)
        return_key = resolve_key(RETURN_KEY, config)
        return_mean, return_std = _final(runs, return_key, n)
        steps, _ = _final(runs, X_KEY, n)
        itr = runs[0]["progress"].get("Itr")
        rows.append({
            "env": env, "label": label, "algo": config.get("algo", ""),
            "seeds": " ".join(str(run["config"].get("seed", "?")) for run in runs),
            "complete": sum(_rows(run) >= int(run["config"].get("iterations", 0)) for run in runs),
            "iterations": int(max(run["config"].get("iterations", 0) for run in runs)),
            "final_itr": int(itr[n - 1]) if itr is not None else n - 1,
            "n_timesteps": steps, "inner_steps": k,
            "pre_update_mean": pre_mean, "pre_update_std": pre_std,
            "post_update_mean": post_mean, "post_update_std": post_std,
            "return_key": return_key, "return_mean": return_mean, "return_std": return_std,
            "wall_clock_s": float(sum(_last_finite(run["progress"].get("Time", np.array([math.nan])))
                                      for run in runs)),
        })
    if exp is not None and (exp.targets or exp.yardstick):
        _add_sample_efficiency(rows, groups, exp)
    return rows


def _add_sample_efficiency(rows: list[dict[str, Any]],
                           groups: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]],
                           exp: ExperimentSpec) -> None:
    """Per row: ``target`` (the stated return of its environment, else nan) and
    ``steps_to_target``; ``yardstick_return`` (the yardstick label's final reported return),
    ``steps_to_yardstick_return`` and ``data_vs_yardstick``, that count over the yardstick's own
    (the thesis's "reaches the model-free asymptote with N× less data" is 1 / this ratio)."""
    by_key = {(row["env"], row["label"]): row for row in rows}
    for row in rows:
        runs = groups[row["env"], row["label"]]
        row["target"] = float(exp.targets.get(row["env"], math.nan))
        row["steps_to_target"] = steps_to_reach(runs, row["return_key"], row["target"])
        yardstick = by_key.get((row["env"], exp.yardstick)) if exp.yardstick else None
        row["yardstick_return"] = yardstick["return_mean"] if yardstick is not None else math.nan
        row["steps_to_yardstick_return"] = steps_to_reach(runs, row["return_key"], row["yardstick_return"])
    for row in rows:
        yardstick = by_key.get((row["env"], exp.yardstick)) if exp.yardstick else None
        base = yardstick["steps_to_yardstick_return"] if yardstick is not None else math.nan
        reached = base and not math.isnan(base)
        row["data_vs_yardstick"] = row["steps_to_yardstick_return"] / base if reached else math.nan


def write_summary(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """``rows`` as CSV (floats at full precision)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_commands(exp: ExperimentSpec, runs: Sequence[PlannedRun], path: Path) -> Path:
    """The equivalent ``adaptrl train`` command of every run, after a commented header."""
    seeds = sorted({run.seed for run in runs})
    lines = [f"# {exp.name}: {exp.description}", f"# {exp.paper}; {', '.join(exp.envs)}",
             f"# {_budget_text(exp, runs)}, seeds {' '.join(map(str, seeds))}; "
             "each command trains one run directory (rerun `adaptrl reproduce` to resume them all)",
             *(run.command for run in runs)]
    path.write_text("\n".join(lines) + "\n")
    return path
