"""``make demo`` / ``adaptrl demo``: ProMP on PointCorners, end to end in a few minutes.

One call trains ProMP (ProMP paper, Alg. 1) on the sparse-reward PointCorners family (ProMP
Fig. 5), meta-tests the final policy on fresh tasks (:func:`adaptrl.experiment.evaluation.evaluate`)
and measures, for each of the four corner goals, how many post-update trajectories reach the goal
region (``plots/exploration.csv``, written with the exploration picture). It ends with one table —
return before and after each adaptation step with its 95 % interval, success per corner,
wall-clock and the paths of the pictures — printed and written to ``summary.txt`` and
``summary.json`` in the run directory.

The settings are the paper preset (ProMP App. D: 40 tasks × 20 rollouts, 3 adaptation steps,
inner step 0.1, …) with the changes of :data:`DEMO_SETTINGS`, each with its reason in
:data:`DEMO_REASONS` (also in the README).
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adaptrl.errors import ConfigError

DEMO_ALGO = "promp"
DEMO_ENV = "PointCorners"

DEMO_SETTINGS: dict[str, Any] = {"iterations": 80, "tasks_per_iter": 20, "horizon": 50}
"""Where the demo differs from ``--preset paper`` (ProMP App. D)."""

DEMO_REASONS: dict[str, str] = {
    "iterations": "the paper trains for 1000; 80 fit the demo's few minutes on 2 cores",
    "tasks_per_iter": "40 in the paper; with only four distinct goals 20 tasks still give each corner "
                      "about 5 per iteration, at half the cost",
    "horizon": "100 in the paper; a corner is 15 steps of at most 0.2 away, so 50 steps reach it and "
               "stay, at half the cost. At the same wall-clock, 80 iterations of 20 tasks × 50 steps "
               "reach more corners than 40 at the paper's batch or 60–140 of 10 tasks × 100 steps "
               "(docs/benchmarks.md, \"The demo's settings\")",
}
"""Why each of :data:`DEMO_SETTINGS` differs from the paper preset."""

DEMO_EVAL_TASKS = 40
"""Fresh tasks of the meta-test at the end (``adaptrl eval``'s default)."""


@dataclass
class CornerSuccess:
    """Post-update success on one corner goal (``plots/exploration.csv``)."""

    goal: tuple[float, float]
    rollouts: int
    reached_fraction: float
    final_distance: float

    @property
    def reached(self) -> bool:
        """The picture's verdict: at least half of the trajectories enter the goal region."""
        return self.reached_fraction >= 0.5


@dataclass
class DemoReport:
    """What the demo measured; :func:`write_summary` writes it, :func:`print_summary` shows it."""

    run_dir: str
    iterations: int
    env_steps: int
    seed: int
    eval_tasks: int
    eval_rollouts: int
    returns: list[dict[str, float]]  # eval rows: step, mean_return, ci95_low, ci95_high, …
    corners: list[CornerSuccess]
    train_seconds: float
    eval_seconds: float
    pictures: dict[str, str]

    @property
    def corners_reached(self) -> int:
        return sum(c.reached for c in self.corners)


def demo_config(iterations: int | None = None, seed: int = 0,
                overrides: Mapping[str, Any] | None = None) -> Any:
    """The demo's :class:`~adaptrl.meta.config.TrainConfig`: paper preset + :data:`DEMO_SETTINGS`,
    then ``iterations``/``overrides`` (a reduced demo, e.g. in the tests)."""
    from adaptrl.experiment.config import build_config

    values = {**DEMO_SETTINGS, **(overrides or {}), "seed": int(seed)}
    if iterations is not None:
        values["iterations"] = iterations
    return build_config(DEMO_ALGO, DEMO_ENV, preset="paper", overrides=values)


def read_corner_success(run_dir: str | Path) -> list[CornerSuccess]:
    """The per-corner rows of ``RUN_DIR/plots/exploration.csv``."""
    from adaptrl.algorithms.meta_rl import EXPLORATION_CSV

    path = Path(run_dir) / "plots" / EXPLORATION_CSV
    if not path.is_file():
        raise ConfigError(f"{str(path)!r} is missing: it is written with the exploration picture at the end "
                          f"of training a PointCorners run.")
    with open(path, newline="") as f:
        return [CornerSuccess((float(r["goal_x"]), float(r["goal_y"])), int(r["rollouts"]),
                              float(r["reached_fraction"]), float(r["final_distance"]))
                for r in csv.DictReader(f)]


def run_demo(out: str | Path, *, iterations: int | None = None, seed: int = 0,
             eval_tasks: int = DEMO_EVAL_TASKS, overrides: Mapping[str, Any] | None = None,
             show_progress: bool = True) -> DemoReport:
    """Train the demo into ``out`` (a fresh directory), meta-test it on ``eval_tasks`` fresh tasks,
    write ``summary.txt``/``summary.json`` and return the report."""
    from adaptrl.experiment.evaluation import evaluate, write_eval
    from adaptrl.experiment.trainer import train

    out = Path(out)
    if (out / "config.yaml").exists():
        raise ConfigError(f"{str(out)!r} already holds a run: the demo trains from scratch; remove it or "
                          f"pass another --out.")
    config = demo_config(iterations, seed, overrides)
    start = time.perf_counter()
    result = train(config, out, show_progress=show_progress)
    train_seconds = time.perf_counter() - start
    if result.interrupted:
        raise KeyboardInterrupt
    start = time.perf_counter()
    evaluation = evaluate(out, tasks=eval_tasks)
    write_eval(out, evaluation)
    eval_seconds = time.perf_counter() - start
    last = result.rows[-1]
    report = DemoReport(
        run_dir=str(out), iterations=config.iterations, env_steps=int(last["n_timesteps"]), seed=config.seed,
        eval_tasks=eval_tasks, eval_rollouts=int(evaluation["rollouts"]),
        returns=[{k: float(v) for k, v in row.items()} for row in evaluation["rows"]],
        corners=read_corner_success(out), train_seconds=train_seconds, eval_seconds=eval_seconds,
        pictures={"learning curve": str(out / "plots" / "learning_curve.png"),
                  "exploration (ProMP Fig. 5)": str(out / "plots" / "exploration.png")})
    write_summary(report)
    return report


def summary_table(report: DemoReport) -> Any:
    """The demo's closing tables, returns per adaptation step and success per corner (a ``rich``
    renderable; :func:`print_summary` adds the wall-clock and the paths)."""
    from rich.console import Group
    from rich.table import Table

    from adaptrl.algorithms.meta_rl import CORNER_REACHED_RADIUS

    returns = Table(title=f"ProMP on PointCorners after {report.iterations} iterations "
                          f"({report.env_steps / 1e6:.2f} M env steps, seed {report.seed}): return on "
                          f"{report.eval_tasks} fresh tasks × {report.eval_rollouts} rollouts")
    for column in ("adaptation step", "mean return", "95% interval"):
        returns.add_column(column, justify="right")
    for row in report.returns:
        step = int(row["step"])
        label = "0 (pre-update)" if step == 0 else str(step)
        returns.add_row(label, f"{row['mean_return']:.2f}", _interval(row))
    corners = Table(title=f"post-update success per corner: {report.corners_reached} of "
                          f"{len(report.corners)} goals reached (≥ half the trajectories come within "
                          f"{CORNER_REACHED_RADIUS:g} of the goal)")
    for column in ("goal", "trajectories reaching", "mean final distance", "reached"):
        corners.add_column(column, justify="right")
    for corner in report.corners:
        corners.add_row(f"({corner.goal[0]:g}, {corner.goal[1]:g})",
                        f"{round(corner.reached_fraction * corner.rollouts)}/{corner.rollouts}",
                        f"{corner.final_distance:.2f}", "yes" if corner.reached else "no")
    return Group(returns, corners)


def summary_lines(report: DemoReport) -> list[str]:
    """The lines under the tables: wall-clock and the paths of the pictures and of the table."""
    return [f"wall-clock: training {report.train_seconds:.0f} s, meta-test {report.eval_seconds:.0f} s",
            *(f"{name}: {path}" for name, path in report.pictures.items()),
            f"this table: {Path(report.run_dir) / 'summary.txt'} (and summary.json)"]


def print_summary(report: DemoReport, console: Any) -> None:
    """Print the demo's closing tables and lines on a ``rich`` console; paths are never cut or
    wrapped, whatever the terminal's width."""
    console.print(summary_table(report))
    for line in summary_lines(report):
        console.print(line, soft_wrap=True, highlight=False)


def _interval(row: Mapping[str, float]) -> str:
    low, high = row["ci95_low"], row["ci95_high"]
    return "n/a (one task)" if low != low else f"[{low:.2f}, {high:.2f}]"


def write_summary(report: DemoReport) -> tuple[Path, Path]:
    """``summary.txt`` (the table as printed) and ``summary.json`` (the report) in the run directory."""
    from rich.console import Console

    run_dir = Path(report.run_dir)
    console = Console(record=True, width=100, file=io.StringIO())
    print_summary(report, console)
    text_path, json_path = run_dir / "summary.txt", run_dir / "summary.json"
    text_path.write_text(console.export_text())
    data = asdict(report)
    data["corners"] = [{**asdict(c), "reached": c.reached} for c in report.corners]
    data["corners_reached"] = report.corners_reached
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    return text_path, json_path
