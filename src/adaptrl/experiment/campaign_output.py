"""What a reproduction writes and prints: ``comparison.png``, ``summary.csv``, ``commands.txt`` and
the ``--dry-run`` plan (layout in :mod:`adaptrl.experiment.campaigns`)."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adaptrl.errors import ConfigError
from adaptrl.experiment.campaigns import PRE_KEY, ExperimentSpec, PlannedRun, ReproduceResult
from adaptrl.experiment.rundir import PROGRESS_FILE
from adaptrl.plots import plot_groups, read_progress, read_run

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
    return f"{run.label} seed {run.seed}: {what}"


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
        lines += [f"  {describe_run(run)} [{action}]", f"    {run.command}"]
    return "\n".join(lines)


def write_outputs(exp: ExperimentSpec, result: ReproduceResult) -> None:
    """Write ``commands.txt``, ``comparison.png`` and ``summary.csv`` of ``result``'s runs that have
    at least one row; fills ``result``'s paths, summary rows and notes."""
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
