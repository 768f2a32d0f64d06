"""Figures (matplotlib, headless Agg backend).

* :func:`plot_task_returns` — box plot of per-task returns (``adaptrl sample``).
* :func:`plot_runs` — learning curves of training runs (``progress.csv`` + ``config.yaml`` folders),
  seeds of the same configuration averaged into one curve with a ± std band.
* :func:`plot_groups` — the same figure with the curves named by the caller (``{label: run dirs}``),
  e.g. the comparison figure of ``adaptrl reproduce``.
* :func:`plot_point_exploration` — PointCorners trajectories per adaptation step (ProMP Fig. 5).
* :func:`pyplot` — ``matplotlib.pyplot`` on the Agg backend, for other figure code.
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adaptrl.envs.device import CORNERS
from adaptrl.errors import ConfigError, require_positive_int, unknown_name_error
from adaptrl.runfiles import CONFIG_FILE, PROGRESS_FILE

DPI = 120
FIGURE_FORMATS = (".png", ".svg", ".pdf")

_RETURN_KEY = re.compile(r"^Step_(\d+)-AverageReturn$")
_X_LABELS = {"n_timesteps": "environment steps", "Itr": "iteration"}
_POINT_LIMIT = 3.0


def pyplot():
    """``matplotlib.pyplot`` with the headless Agg backend selected (imported on first use).

    For every module that draws figures (here and e.g. ``adaptrl.analysis``) without touching the
    display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure_path(out: str | Path) -> Path:
    """``out`` as a Path with a supported image suffix (``.png`` added if it has none); parents made."""
    path = Path(out)
    if not path.suffix:
        path = path.with_suffix(".png")
    if path.suffix.lower() not in FIGURE_FORMATS:
        raise ConfigError(f"cannot write a figure to {str(path)!r}: the file name must end in "
                          f"{', '.join(FIGURE_FORMATS)}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _save(fig: Any, path: Path) -> Path:
    plt = pyplot()
    try:
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)
    return path


def plot_task_returns(returns: np.ndarray, labels: Sequence[str], title: str, path: str) -> str:
    """Box plot of the returns of every task (``returns``: ``[tasks, rollouts]``); returns ``path``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(labels) + 2), 3.6), dpi=DPI)
    ax.boxplot(np.asarray(returns).T, showmeans=True)
    ax.set_xticks(range(1, len(labels) + 1), [f"{i}\n{lab}" for i, lab in enumerate(labels)],
                  fontsize=7)
    ax.set_xlabel("task")
    ax.set_ylabel("undiscounted return")
    ax.set_title(f"{title}: random-policy returns per task")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------
# Training runs
# --------------------------------------------------------------------------------------------------

def _run_folder(run_dir: str | Path) -> Path:
    """The run directory of ``run_dir`` (which may also name its ``progress.csv``)."""
    path = Path(run_dir)
    if path.is_file() and path.suffix == ".csv":
        return path.parent
    if not path.exists():
        raise ConfigError(f"run directory {str(path)!r} does not exist: expected a folder written by "
                          f"`adaptrl train` (containing {PROGRESS_FILE} and {CONFIG_FILE}).")
    if not path.is_dir():
        raise ConfigError(f"{str(path)!r} is not a run directory: expected a folder written by "
                          f"`adaptrl train` (containing {PROGRESS_FILE} and {CONFIG_FILE}).")
    return path


def _to_float(cell: str) -> float:
    cell = cell.strip()
    if not cell:
        return math.nan
    try:
        return float(cell)
    except ValueError:
        return {"true": 1.0, "false": 0.0}.get(cell.lower(), math.nan)


def read_progress(run_dir: str | Path) -> dict[str, np.ndarray]:
    """Columns of ``run_dir/progress.csv`` as float arrays (one entry per iteration; blanks → nan).

    ``run_dir`` may also be the CSV file itself. Rows shorter than the header (a run stopped while
    writing) are padded with nan.
    """
    path = Path(run_dir)
    if not (path.is_file() and path.suffix == ".csv"):
        path = _run_folder(path) / PROGRESS_FILE
        if not path.is_file():
            raise ConfigError(f"no {PROGRESS_FILE} in {str(path.parent)!r}: expected a run directory "
                              f"written by `adaptrl train` (containing {PROGRESS_FILE} and {CONFIG_FILE}).")
    expected = "expected a header row of column names followed by one row of numbers per iteration"
    try:
        with path.open(newline="") as f:
            rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ConfigError(f"cannot read {str(path)!r} ({e}): {expected}.") from e
    if not rows:
        raise ConfigError(f"{str(path)!r} is empty: {expected}.")
    header = [name.strip() for name in rows[0]]
    if any(not name for name in header) or len(set(header)) != len(header):
        raise ConfigError(f"{str(path)!r} is malformed (empty or repeated column names in its header "
                          f"{header}): {expected}.")
    if all(not math.isnan(_to_float(name)) for name in header):
        raise ConfigError(f"{str(path)!r} has no header row (its first row is all numbers): {expected}.")
    n_cols = len(header)
    values = np.full((len(rows) - 1, n_cols), np.nan)
    for i, row in enumerate(rows[1:]):
        if len(row) > n_cols:
            raise ConfigError(f"{str(path)!r} is malformed: data row {i + 1} has {len(row)} cells but the "
                              f"header has {n_cols} columns; {expected}.")
        values[i, : len(row)] = [_to_float(cell) for cell in row]
    return {name: values[:, j].copy() for j, name in enumerate(header)}


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The hyperparameters in ``run_dir/config.yaml`` (``{}`` if the run has none)."""
    import yaml

    path = _run_folder(run_dir) / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read {str(path)!r} ({e}): expected a YAML mapping of "
                          f"hyperparameter names to values.") from e
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigError(f"{str(path)!r} holds a {type(config).__name__}, expected a YAML mapping of "
                          f"hyperparameter names to values.")
    return config


def _run_label(config: Mapping[str, Any], label_by: Sequence[str], folder: Path) -> str:
    if not config or not any(k in config for k in label_by):
        return folder.name
    parts = []
    for key in label_by:
        value = config.get(key, "?")
        parts.append(str(value) if key in ("algo", "env") else f"{key}={value}")
    return " · ".join(parts)


def _seed_order(run: Mapping[str, Any]) -> tuple[int, float, str]:
    seed = run["config"].get("seed")
    numeric = isinstance(seed, int | float) and not isinstance(seed, bool)
    return (0 if numeric else 1, float(seed) if numeric else 0.0, str(run["dir"]))


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """One run as ``{"dir": Path, "config": dict, "progress": {column: array}}``."""
    return {"dir": _run_folder(run_dir), "config": read_config(run_dir), "progress": read_progress(run_dir)}


def group_runs(run_dirs: Sequence[str | Path],
               label_by: Sequence[str] = ("algo", "env")) -> dict[str, list[dict[str, Any]]]:
    """Read every run and group those whose ``config.yaml`` values for ``label_by`` coincide.

    Returns ``{label: [run, ...]}`` in order of first appearance (runs sorted by seed); each run is a
    dict with ``"dir"`` (Path), ``"config"`` (dict) and ``"progress"`` (:func:`read_progress`).
    Runs without a config are labelled by their folder name. A repeated folder is read once.
    """
    if isinstance(run_dirs, str | Path):
        run_dirs = [run_dirs]
    if not run_dirs:
        raise ConfigError("no run directories given: pass at least one folder written by `adaptrl train`.")
    runs, seen = [], set()
    for run_dir in run_dirs:
        folder = _run_folder(run_dir)
        if folder.resolve() in seen:
            continue
        seen.add(folder.resolve())
        runs.append(read_run(run_dir))
    config_keys = {k for run in runs for k in run["config"]}
    if config_keys:
        for key in label_by:
            if key not in config_keys:
                raise unknown_name_error("config key", key, config_keys)
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(_run_label(run["config"], label_by, run["dir"]), []).append(run)
    return {label: _one_run_per_seed(label, sorted(members, key=_seed_order))
            for label, members in groups.items()}


def _one_run_per_seed(label: str, members: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One run per distinct configuration: runs whose ``config.yaml`` agree on everything but the
    iteration count (copies of a run, same seed) are not independent samples, and counting them
    would narrow the ± std band. Warns when it drops any."""
    kept, seen = [], []
    for run in members:
        identity = {k: v for k, v in run["config"].items() if k != "iterations"} or {"dir": run["dir"]}
        if identity in seen:
            continue
        seen.append(identity)
        kept.append(run)
    if len(kept) < len(members):
        dropped = [str(run["dir"]) for run in members if run not in kept]
        warnings.warn(f"{label}: {len(members)} runs but {len(kept)} distinct configurations (seeds); "
                      f"copies counted once (ignored: {', '.join(dropped)}).", UserWarning, stacklevel=3)
    return kept


def align_runs(progresses: Sequence[Mapping[str, np.ndarray]], key: str,
               x_key: str = "n_timesteps") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, mean, std)`` of column ``key`` across runs, on the first min-length rows.

    ``x`` is the mean of ``x_key`` across runs; ``std`` is the (population) spread across runs, ignoring
    nan cells. Every run must have both columns.
    """
    if not progresses:
        raise ConfigError("no runs to align.")
    lengths = [len(p[key]) for p in progresses]
    n = min(lengths)
    if len(set(lengths)) > 1:
        warnings.warn(f"{key}: runs have {min(lengths)}–{max(lengths)} rows; the curve is cut to the "
                      f"shortest run ({n} rows).", UserWarning, stacklevel=2)
    ys = np.stack([np.asarray(p[key], dtype=float)[:n] for p in progresses])
    xs = np.stack([np.asarray(p[x_key], dtype=float)[:n] for p in progresses])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan cells stay nan
        return np.nanmean(xs, axis=0), np.nanmean(ys, axis=0), np.nanstd(ys, axis=0)


def _check_column(key: str, groups: Mapping[str, list[dict[str, Any]]]) -> None:
    runs = [run for members in groups.values() for run in members]
    available = {name for run in runs for name in run["progress"]}
    if key not in available:
        raise unknown_name_error("progress column", key, available)
    for run in runs:
        if key not in run["progress"]:
            raise ConfigError(f"progress column {key!r} is missing from {str(run['dir'] / PROGRESS_FILE)!r} "
                              f"(other runs have it); its columns: {', '.join(run['progress'])}.")


def _last_return_step(members: Sequence[Mapping[str, Any]]) -> int | None:
    """Highest ``k`` with a ``Step_k-AverageReturn`` column in every run of ``members``."""
    common = set.intersection(*(set(run["progress"]) for run in members))
    steps = [int(m.group(1)) for name in common if (m := _RETURN_KEY.match(name))]
    return max(steps) if steps else None


def _steps_title(k: int) -> str:
    return f"{k} step" if k == 1 else f"{k} steps"


def _panels(keys: Sequence[str] | None,
            groups: Mapping[str, list[dict[str, Any]]]) -> list[tuple[str, dict[str, str]]]:
    """``[(title, {group label: column})]``, one per subplot."""
    if keys is not None:
        if isinstance(keys, str):
            keys = [keys]
        if not keys:
            raise ConfigError("keys is empty: name at least one progress.csv column to plot.")
        for key in keys:
            _check_column(key, groups)
        panels = []
        for key in keys:
            m = _RETURN_KEY.match(key)
            title = key
            if m and int(m.group(1)) == 0:
                title = "pre-update"
            elif m:
                title = f"after {_steps_title(int(m.group(1)))}"
            panels.append((title, dict.fromkeys(groups, key)))
        return panels
    last = {label: _last_return_step(members) for label, members in groups.items()}
    for label, k in last.items():
        if k is None:
            runs = ", ".join(str(run["dir"]) for run in groups[label])
            raise ConfigError(f"the runs {runs} have no Step_k-AverageReturn columns in common; pass keys= "
                              f"to choose the progress.csv columns to plot.")
    adapted = any(k for k in last.values())
    panels = [("pre-update" if adapted else "return (no adaptation)",
               {label: "Step_0-AverageReturn" for label in groups})]
    if adapted:
        ks = sorted({k for k in last.values() if k})
        what = _steps_title(ks[0]) if len(ks) == 1 else f"{'/'.join(map(str, ks))} steps"
        panels.append((f"post-update ({what})",
                       {label: f"Step_{k}-AverageReturn" for label, k in last.items() if k}))
    return panels


def plot_runs(run_dirs: Sequence[str | Path], keys: Sequence[str] | None = None,
              out: str | Path = "plot.png", x_key: str = "n_timesteps",
              label_by: Sequence[str] = ("algo", "env")) -> Path:
    """Learning curves of training runs: one subplot per ``keys`` column, one curve per group of seeds.

    Runs whose ``config.yaml`` agree on ``label_by`` form one curve, the mean over seeds (aligned on the
    shortest run) with a ± std band, against the mean ``x_key``. By default plots
    ``Step_0-AverageReturn`` (pre-update) and the last ``Step_K-AverageReturn`` (post-update).
    Writes ``out`` (.png, .svg or .pdf) and returns its path.
    """
    return _plot_grouped(group_runs(run_dirs, label_by), keys, out, x_key)


#: One clearly distinct, colour-blind-safe colour per adaptation step (Okabe & Ito); the
#: post-update trajectories get :data:`POST_UPDATE_COLOR` and a thicker line.
STEP_COLORS = ("#E69F00", "#CC79A7", "#56B4E9", "#F0E442", "#D55E00", "#999999")
POST_UPDATE_COLOR = "#0072B2"


CURVE_SIZE = (6.4, 4.0)
"""Size in inches of :func:`plot_learning_curve`'s figure."""


def plot_learning_curve(run_dir: str | Path, keys: Sequence[str], labels: Sequence[str],
                        out: str | Path, x_key: str = "n_timesteps") -> Path:
    """One run's learning curve: every column of ``keys`` (e.g. the return before and after each
    adaptation step) on one axis with a shared scale, so the gap between the curves is the first
    thing one sees; the title gives the algorithm, environment, seed and budget (iterations and
    environment steps). Colours follow the exploration picture (:data:`STEP_COLORS`, the last key
    in :data:`POST_UPDATE_COLOR`). Writes ``out`` and returns its path."""
    if len(keys) != len(labels) or not keys:
        raise ConfigError(f"give one label per curve: {len(keys)} keys, {len(labels)} labels.")
    progress = read_progress(run_dir)
    config = read_config(run_dir)
    for key in (x_key, *keys):
        if key not in progress:
            raise ConfigError(f"{run_dir} has no column {key!r} in {PROGRESS_FILE}; it has "
                              f"{', '.join(sorted(progress))}.")
    path = _figure_path(out)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=CURVE_SIZE, dpi=DPI)
    x = np.asarray(progress[x_key], dtype=float)
    colors = [STEP_COLORS[k % len(STEP_COLORS)] for k in range(len(keys) - 1)] + [POST_UPDATE_COLOR]
    for key, label, color in zip(keys, labels, colors, strict=True):
        ax.plot(x, np.asarray(progress[key], dtype=float), color=color, lw=1.8 if key == keys[-1] else 1.2,
                label=label)
    ax.set_xlabel(_X_LABELS.get(x_key, x_key))
    ax.set_ylabel("average return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    steps = int(progress["n_timesteps"][-1]) if "n_timesteps" in progress else None
    budget = f"{len(x)} iterations" + (f", {steps / 1e6:.2f} M env steps" if steps is not None else "")
    ax.set_title(f"{config.get('algo', '?')} on {config.get('env', '?')}: seed {config.get('seed', '?')}, "
                 f"{budget}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_groups(groups: Mapping[str, Sequence[str | Path]], keys: Sequence[str] | None = None,
                out: str | Path = "plot.png", x_key: str = "n_timesteps", title: str | None = None) -> Path:
    """Learning curves with caller-chosen curves: ``groups`` maps a curve label to the run directories
    of its seeds.

    Each curve is the mean over its runs (aligned on the shortest run) with a ± std band, against the
    mean ``x_key``; ``keys`` as in :func:`plot_runs` (default: pre- and post-update average return).
    Cells that are blank in ``progress.csv`` (a column logged only every few iterations) are skipped,
    so such columns draw as lines through the logged points. ``title`` goes above the panels. Writes
    ``out`` (.png, .svg or .pdf) and returns its path.
    """
    if not groups:
        raise ConfigError("no curves to plot: pass at least one label with its run directories.")
    read: dict[str, list[dict[str, Any]]] = {}
    for label, run_dirs in groups.items():
        if isinstance(run_dirs, str | Path):
            run_dirs = [run_dirs]
        if not run_dirs:
            raise ConfigError(f"curve {label!r} has no run directories: give at least one per label.")
        read[label] = sorted((read_run(run_dir) for run_dir in run_dirs), key=_seed_order)
    return _plot_grouped(read, keys, out, x_key, title)


def _plot_grouped(groups: Mapping[str, list[dict[str, Any]]], keys: Sequence[str] | None,
                  out: str | Path, x_key: str, title: str | None = None) -> Path:
    """Draw the figure of :func:`plot_runs` / :func:`plot_groups` from runs read by :func:`read_run`."""
    _check_column(x_key, groups)
    panels = [(panel_title, {label: (groups[label], column) for label, column in columns.items()})
              for panel_title, columns in _panels(keys, groups)]
    return plot_panels(panels, out, x_key, title)


def plot_panels(panels: Sequence[tuple[str, Mapping[str, tuple[Sequence[Mapping[str, Any]], str]]]],
                out: str | Path, x_key: str = "n_timesteps", title: str | None = None,
                log_x: bool = False) -> Path:
    """One subplot per ``(panel title, {curve label: (runs, column)})``: each curve the mean ± std of
    ``column`` over its runs (read by :func:`read_run`) against the mean ``x_key``, so curves of one
    panel may come from different columns (algorithms that log the same quantity under different
    names). A label keeps its colour in every panel; ``log_x`` draws x on a log scale (curves whose
    budgets differ by orders of magnitude). Writes ``out`` and returns its path."""
    for _, curves in panels:
        for members, column in curves.values():
            for run in members:
                for key in (x_key, column):
                    if key not in run["progress"]:
                        raise ConfigError(f"progress column {key!r} is missing from "
                                          f"{str(run['dir'] / PROGRESS_FILE)!r}; its columns: "
                                          f"{', '.join(run['progress'])}.")
                if not len(run["progress"][x_key]):
                    raise ConfigError(f"{str(run['dir'] / PROGRESS_FILE)!r} has a header but no iterations "
                                      f"yet: expected one row of numbers per iteration.")
    path = _figure_path(out)

    plt = pyplot()
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    order = list(dict.fromkeys(label for _, curves in panels for label in curves))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 0.4, 3.8 + (0.3 if title else 0)),
                             dpi=DPI, squeeze=False, sharex=x_key != "n_timesteps")
    for ax, (panel_title, curves) in zip(axes[0], panels, strict=True):
        for label, (members, column) in curves.items():
            _draw_curve(ax, label, members, column, x_key, colors[order.index(label) % len(colors)])
        ax.set_title(panel_title)
        ax.set_xlabel(_X_LABELS.get(x_key, x_key))
        columns = {column for _, column in curves.values()}
        ax.set_ylabel("average return" if all(c.endswith("AverageReturn") for c in columns)
                      else " / ".join(sorted(columns)))
        if log_x:
            ax.set_xscale("log")
        elif x_key == "n_timesteps":
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    if title:
        import textwrap

        width = fig.get_size_inches()[0]
        lines = textwrap.wrap(title, width=max(30, int(width * 12)))
        fig.suptitle("\n".join(lines), fontsize=12 if len(lines) == 1 else 9)
    fig.tight_layout()
    return _save(fig, path)


def _draw_curve(ax: Any, label: str, members: Sequence[Mapping[str, Any]], column: str, x_key: str,
                color: str) -> None:
    """Mean ± std over ``members`` of ``column`` on ``ax``; iterations where it is nan are skipped."""
    x, mean, std = align_runs([run["progress"] for run in members], column, x_key)
    finite = np.isfinite(x) & np.isfinite(mean)
    x, mean, std = x[finite], mean[finite], std[finite]
    n = len(members)
    ax.plot(x, mean, color=color, lw=1.6, marker="o" if len(x) == 1 else None,
            label=f"{label} ({n} {'seed' if n == 1 else 'seeds'})")
    if n > 1:
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)


# --------------------------------------------------------------------------------------------------
# PointCorners exploration (ProMP Fig. 5)
# --------------------------------------------------------------------------------------------------

def _as_batch(name: str, array: Any, ndim: int, shape: tuple[int, ...] | None = None) -> np.ndarray:
    a = np.asarray(array, dtype=float)
    if a.ndim != ndim or (ndim == 4 and a.shape[-1] < 2) or (shape is not None and a.shape != shape):
        want = {4: "[tasks, rollouts, time, 2]", 3: "[tasks, rollouts, time]"}[ndim]
        if shape is not None:
            want += f" = {list(shape)} (matching the observations)"
        raise ConfigError(f"{name} has shape {list(a.shape)}, expected {want}.")
    return a


def _distinct_goal_tasks(goals: np.ndarray, limit: int = 4) -> list[int]:
    """Index of the first task of each distinct goal (at most ``limit``)."""
    chosen: list[int] = []
    for i, goal in enumerate(goals):
        if not any(np.allclose(goal, goals[j], atol=1e-6) for j in chosen):
            chosen.append(i)
        if len(chosen) == limit:
            break
    return chosen


def goal_success(observations: np.ndarray, mask: np.ndarray, goals: np.ndarray,
                 radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Per task: the fraction of trajectories that enter the goal region (some real step within
    ``radius`` of the task's goal) and the mean final distance to the goal.

    ``observations`` ``[tasks, rollouts, time, ≥2]`` (positions first), ``mask`` ``[tasks, rollouts,
    time]``, ``goals`` ``[tasks, 2]``. A trajectory without real steps counts as not reached and is
    left out of the distance."""
    obs = np.asarray(observations, dtype=float)[..., :2]
    mask = np.asarray(mask) > 0.5
    distance = np.linalg.norm(obs - np.asarray(goals, dtype=float)[:, None, None, :2], axis=-1)
    valid = mask.any(axis=-1)
    reached = (mask & (distance <= radius)).any(axis=-1).mean(axis=1)
    last = np.maximum(mask.shape[-1] - 1 - np.argmax(mask[..., ::-1], axis=-1), 0)
    final = np.take_along_axis(distance, last[..., None], axis=2)[..., 0]
    with np.errstate(invalid="ignore"):
        mean_final = np.where(valid, final, 0.0).sum(axis=1) / valid.sum(axis=1)
    return reached, mean_final


def plot_point_exploration(pre_observations: Sequence[np.ndarray], post_observations: np.ndarray,
                           masks_pre: Sequence[np.ndarray], mask_post: np.ndarray, goals: np.ndarray,
                           out: str | Path, *, goal_radius: float = 0.5, max_trajectories: int = 5,
                           title: str | None = None) -> Path:
    """PointCorners trajectories of every adaptation step, one subplot per goal corner (ProMP Fig. 5).

    ``pre_observations[k]`` (``[tasks, rollouts, time, 2]``) is step ``k``'s pre-update batch,
    ``post_observations`` the batch after the last step; masks are ``[tasks, rollouts, time]`` (1 on
    real steps); ``goals`` ``[tasks, 2]``. Up to 4 tasks with distinct goals are drawn, with the goal
    region (the disc of ``goal_radius`` around the goal, the success criterion) shaded, one distinct
    colour per adaptation step, and the post-update success of the panel's task written on it
    (:func:`goal_success`: trajectories that enter the goal region, mean final distance). Writes
    ``out`` and returns its path.
    """
    if len(pre_observations) != len(masks_pre):
        raise ConfigError(f"got {len(pre_observations)} pre-update observation batches but "
                          f"{len(masks_pre)} masks; expected one mask per batch.")
    max_trajectories = require_positive_int("max_trajectories", max_trajectories)
    if not goal_radius > 0:
        raise ConfigError(f"goal_radius must be positive, got {goal_radius!r}.")
    stages = []
    for k, (obs, mask) in enumerate(zip(pre_observations, masks_pre, strict=True)):
        o = _as_batch(f"pre_observations[{k}]", obs, 4)
        stages.append((o, _as_batch(f"masks_pre[{k}]", mask, 3, o.shape[:3])))
    o = _as_batch("post_observations", post_observations, 4)
    stages.append((o, _as_batch("mask_post", mask_post, 3, o.shape[:3])))
    n_tasks = stages[0][0].shape[0]
    goals = np.asarray(goals, dtype=float)
    if goals.ndim != 2 or goals.shape[0] != n_tasks or goals.shape[1] < 2:
        raise ConfigError(f"goals has shape {list(goals.shape)}, expected [tasks, 2] = [{n_tasks}, 2].")
    for k, (obs, _) in enumerate(stages):
        if obs.shape[0] != n_tasks:
            name = "post_observations" if k == len(stages) - 1 else f"pre_observations[{k}]"
            raise ConfigError(f"{name} has {obs.shape[0]} tasks but pre_observations[0] has {n_tasks}.")
    goals = goals[:, :2]
    path = _figure_path(out)
    n_steps = len(stages) - 1
    labels = [f"step {k}" for k in range(n_steps)] + ["post-update"]
    if n_steps:
        labels[0] = "pre-update (step 0)"

    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle, Patch

    colors = [STEP_COLORS[k % len(STEP_COLORS)] for k in range(n_steps)] + [POST_UPDATE_COLOR]
    widths = [1.0] * n_steps + [1.8]
    reached, final_distance = goal_success(stages[-1][0], stages[-1][1], goals, goal_radius)
    tasks = _distinct_goal_tasks(goals)
    drawn = [o[tasks, :max_trajectories, :, :2][m[tasks, :max_trajectories] > 0.5] for o, m in stages]
    extent = max([_POINT_LIMIT] + [float(np.nanmax(np.abs(d))) * 1.05 for d in drawn if d.size])
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.3 * len(tasks) + 0.3, 3.9), dpi=DPI, squeeze=False,
                             sharex=True, sharey=True)
    for ax, task in zip(axes[0], tasks, strict=True):
        goal = goals[task]
        for corner in CORNERS:
            if not np.allclose(corner, goal):
                ax.add_patch(Circle(tuple(corner), goal_radius, facecolor="0.6", alpha=0.15,
                                    edgecolor="0.5", linestyle="--", zorder=0))
        ax.add_patch(Circle(tuple(goal), goal_radius, facecolor="tab:green", alpha=0.3,
                            edgecolor="tab:green", zorder=0))
        ax.plot(*goal, marker="*", color="tab:green", ms=8, zorder=1)
        for (obs, mask), color, lw in zip(stages, colors, widths, strict=True):
            for r in range(min(obs.shape[1], max_trajectories)):
                valid = mask[task, r] > 0.5
                if not valid.any():
                    continue
                xy = obs[task, r, :, :2].copy()
                xy[~valid] = np.nan
                ax.plot(xy[:, 0], xy[:, 1], color=color, lw=lw, alpha=0.9, zorder=2)
                end = xy[np.flatnonzero(valid)[-1]]
                ax.plot(*end, marker="o", ms=2.5, color=color, zorder=3)
        ax.plot(0.0, 0.0, marker="+", color="k", ms=7, zorder=4)
        ax.set_xlim(-extent, extent)
        ax.set_ylim(-extent, extent)
        ax.set_aspect("equal")
        ax.set_title(f"goal ({goal[0]:g}, {goal[1]:g})")
        verdict = "reached" if reached[task] >= 0.5 else "not reached"
        n_rollouts = stages[-1][0].shape[1]
        entered = round(reached[task] * n_rollouts)
        ax.text(0.03, 0.03, f"post-update: {verdict}\n{entered}/{n_rollouts} reach the goal, final dist "
                f"{final_distance[task]:.2f}", transform=ax.transAxes, fontsize=7, va="bottom",
                bbox=dict(facecolor="white", alpha=0.8, edgecolor="none", pad=1.5))
        ax.grid(alpha=0.2)
    handles = [Line2D([], [], color=c, lw=lw, label=lab) for c, lw, lab in zip(colors, widths, labels,
                                                                                strict=True)]
    handles += [Patch(facecolor="tab:green", alpha=0.3, label=f"goal region (within {goal_radius:g})"),
                Patch(facecolor="0.6", alpha=0.15, edgecolor="0.5", linestyle="--", label="other corners")]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return _save(fig, path)
