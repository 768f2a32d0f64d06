"""The run directory (README, "Usage"; docs/architecture.md) and its files::

    run_dir/config.yaml        every resolved hyperparameter
    run_dir/progress.csv       one row per iteration, the original ProMP key names
    run_dir/tensorboard/       TensorBoard event files (same scalars; one file per start or resume)
    run_dir/checkpoints/       latest.npz, every ``checkpoint_every`` iterations and on Ctrl-C
    run_dir/plots/             learning curve and the algorithm's own pictures
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import yaml

from adaptrl.algorithms import ALGORITHMS
from adaptrl.errors import ConfigError
from adaptrl.experiment.checkpoints import has_checkpoint
from adaptrl.meta.config import TrainConfig, config_from_dict
from adaptrl.runfiles import CONFIG_FILE, PROGRESS_FILE


def prepare_run_dir(config: TrainConfig, run_dir: str | Path) -> Path:
    """Create a fresh run directory; refuse to overwrite an existing run."""
    run_dir = Path(run_dir)
    if (run_dir / PROGRESS_FILE).exists() or has_checkpoint(run_dir):
        raise ConfigError(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                          "or choose another --out.")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_config(config, run_dir)
    return run_dir


def write_run_config(config: TrainConfig, run_dir: str | Path) -> Path:
    """``run_dir/config.yaml``: the settings of the groups the run's algorithm uses (rewritten on
    resume, so an extended ``iterations`` is recorded)."""
    groups = ALGORITHMS.get(config.algo).settings if config.algo in ALGORITHMS else None
    path = Path(run_dir) / CONFIG_FILE
    path.write_text(config.to_yaml(groups))
    return path


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The validated configuration of a run directory."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory ({CONFIG_FILE} is missing).")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path} is damaged: not valid YAML{where} "
                          f"({getattr(exc, 'problem', None) or type(exc).__name__}); fix or restore it."
                          ) from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path} is damaged: expected a mapping of settings, got {type(data).__name__}.")
    return config_from_dict(data or {})


class ProgressWriter:
    """``progress.csv`` with a fixed header (the first row's keys) plus TensorBoard scalars.

    ``keep_rows`` (resuming): keep that many rows of an existing file and append after them. The
    TensorBoard writer then starts a new event file whose first event purges every step ≥
    ``keep_rows`` (``purge_step``): the steps logged after the last checkpoint of a crashed run are
    written again by the resumed run, and TensorBoard shows each step once, the resumed value."""

    def __init__(self, run_dir: Path, keep_rows: int | None, tensorboard: bool = True):
        self.path = run_dir / PROGRESS_FILE
        self.header: list[str] | None = None
        if keep_rows is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                rows = list(csv.reader(f))
            if rows:
                self.header = rows[0]
                with open(self.path, "w", newline="") as f:
                    csv.writer(f).writerows(rows[: keep_rows + 1])
        elif self.path.exists():
            self.path.unlink()
        self.tb = None
        if tensorboard:
            self.tb = tensorboard_writer(run_dir / "tensorboard", purge_step=keep_rows)

    def write(self, row: dict[str, float]) -> None:
        if self.header is None:
            self.header = list(row)
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self.header)
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_format(row.get(k, "")) for k in self.header])
        if self.tb is not None:
            step = int(row["Itr"])
            for key, value in row.items():
                if key != "Itr" and isinstance(value, int | float) and math.isfinite(value):
                    self.tb.add_scalar(key, value, step)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def tensorboard_writer(log_dir: Path, purge_step: int | None = None) -> Any:
    """A ``tensorboardX.SummaryWriter`` on a new event file in ``log_dir``.

    Event files are named by the second they were created in, and one created in the same second
    as an earlier one would overwrite it; the suffix ``.NNN`` (the number of event files already
    there) keeps every file, sorted in the order they were written (TensorBoard reads them in name
    order, so a resumed run's ``purge_step`` applies to the events before it)."""
    from tensorboardX import SummaryWriter

    earlier = len(list(log_dir.glob("events.out.tfevents.*"))) if log_dir.is_dir() else 0
    return SummaryWriter(str(log_dir), purge_step=purge_step, filename_suffix=f".{earlier:03d}")


def _format(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)
