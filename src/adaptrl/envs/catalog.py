"""What the task families are, as data for listings (``adaptrl envs``), and short texts of tasks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from adaptrl.envs import ALIASES, family_backend, family_names, is_single_task, make


def family_info(name: str) -> dict[str, Any]:
    """One family's description: name, aliases, obs/act dimensions, horizon, dt, backend, task
    distribution (``"single task"`` for the single-task environments, also flagged by
    ``single_task``), paper and deviations from the original code (JSON-serialisable)."""
    env = make(name, **({"num_threads": 1} if family_backend(name) == "host" else {}))
    try:
        spec = env.spec
        return {
            "name": name, "aliases": [a for a, target in ALIASES.items() if target == name],
            "obs_dim": spec.obs_dim, "act_dim": spec.act_dim, "horizon": spec.horizon, "dt": spec.dt,
            "backend": spec.backend, "tasks": spec.task_description,
            "single_task": is_single_task(name), "paper": spec.paper,
            "deviations": list(spec.deviations),
        }
    finally:
        env.close()


def family_catalog() -> list[dict[str, Any]]:
    """:func:`family_info` of every family, in :func:`adaptrl.envs.family_names` order."""
    return [family_info(name) for name in family_names()]


def describe_task_entry(value: Any) -> str:
    """Short text of one task entry: ``-1``, ``(0.31, -0.95)``, or ``[6 values]``."""
    value = np.asarray(value)
    if value.ndim == 0:
        return f"{float(value):.3g}"
    if value.size <= 3:
        return "(" + ", ".join(f"{float(x):.3g}" for x in value.ravel()) + ")"
    return f"[{value.size} values]"


def describe_tasks(tasks: Mapping[str, Any]) -> list[list[str]]:
    """Per task of a batch (``{entry: [M, ...]}``), the text of each entry in ``tasks`` order."""
    count = len(next(iter(tasks.values()))) if tasks else 0
    return [[describe_task_entry(np.asarray(v)[i]) for v in tasks.values()] for i in range(count)]
