"""The Algorithm protocol and the registry of algorithms.

An algorithm is what the one training loop (:func:`adaptrl.experiment.trainer.train`) runs:

    state                       = algorithm.init(key)
    state, metrics, env_steps   = algorithm.iteration(state, itr, key)

``init`` and ``iteration`` get their keys from the loop (``fold_in(key(seed), 0)`` and
``fold_in(key(seed), itr + 1)``), so iteration ``itr`` is reproducible on its own and a resumed run
continues exactly. ``state`` is a pytree (checkpointed by the loop with named fields);
``metrics`` are the iteration's ``progress.csv`` columns; ``env_steps`` counts real environment
steps simulated. The loop owns everything else: the run directory, ``progress.csv``,
TensorBoard, the progress bar (showing :attr:`Algorithm.headline`), checkpoints, resume, the NaN
stop and callbacks.

A *recipe* (one module per algorithm family: :mod:`adaptrl.algorithms.promp`, ...) registers an
:class:`AlgorithmSpec`: the composition, the paper's settings and how to build the algorithm.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from adaptrl.registry import Registry


class IterationOutput(NamedTuple):
    """What :meth:`Algorithm.iteration` returns."""

    state: Any
    metrics: dict[str, float]
    env_steps: int


class Algorithm(Protocol):
    """What the training loop needs from an algorithm (module docstring)."""

    headline: Mapping[str, str]
    """Progress-bar label → metric key, e.g. ``{"pre": "Step_0-AverageReturn"}``."""

    curve: Mapping[str, str]
    """Learning-curve label → metric key: the columns ``plots/learning_curve.png`` draws on one axis."""

    def init(self, key: Any) -> Any: ...

    def iteration(self, state: Any, itr: int, key: Any) -> IterationOutput: ...

    def non_finite(self, state: Any, metrics: Mapping[str, float]) -> str | None:
        """What became NaN/inf (``None`` when all is finite): the loop stops on it."""
        ...

    def write_outputs(self, run_dir: Path, state: Any) -> list[Path]:
        """Algorithm-specific pictures after training (the loop draws the learning curve)."""
        ...

    def evaluate(self, state: Any, *, tasks: int, adapt_steps: int | None, rollouts: int | None,
                 seed: int) -> dict[str, Any]: ...

    def close(self) -> None: ...


def final_step_return(config: Mapping[str, Any]) -> str:
    """``Step_K-AverageReturn`` with K = ``inner_steps``: the meta-RL papers report the average
    return after the last adaptation step (K = 0: the policy's own return)."""
    return f"Step_{int(config.get('inner_steps', 1))}-AverageReturn"


@dataclass(frozen=True)
class AlgorithmSpec:
    """A registered algorithm: its name, a one-line description, the composition its default
    preset sets, the paper's per-environment settings (``--preset paper``) and its builder
    ``build(config) → Algorithm``, and the setting groups it uses."""

    name: str
    description: str
    composition: Mapping[str, Any]
    build: Callable[[Any], Algorithm]
    paper_settings: Callable[[str], dict[str, Any]] = field(default=lambda env: {})
    paper: str = ""
    settings: tuple[str, ...] = ("run", "meta")
    """The setting groups it uses (:data:`adaptrl.meta.config.SETTING_GROUPS`): what ``--set``
    accepts and what its ``config.yaml`` holds."""
    reported_return: Callable[[Mapping[str, Any]], str] = final_step_return
    """The ``progress.csv`` column holding the real return its paper reports, given a run's
    configuration (``config.yaml`` as a dict): what ``adaptrl reproduce`` compares across algorithms."""


ALGORITHMS: Registry[AlgorithmSpec] = Registry("algorithm")


def register(spec: AlgorithmSpec) -> AlgorithmSpec:
    """Add ``spec`` to :data:`ALGORITHMS` (one call per algorithm, in its recipe module)."""
    return ALGORITHMS.register(spec.name, spec, spec.description)
