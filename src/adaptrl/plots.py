"""PNG figures (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_task_returns(returns: np.ndarray, labels: Sequence[str], title: str, path: str) -> str:
    """Box plot of the returns of every task (``returns``: ``[tasks, rollouts]``); returns ``path``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(labels) + 2), 3.6), dpi=120)
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
