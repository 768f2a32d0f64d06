"""Memory estimated before allocation: the peak bytes of a meta-RL batch, checked against what is free.

A batch is M tasks × R rollouts × T steps (n = M·R·T *step-samples* per sampling round) of an env
with observation size O and action size A, for a policy MLP of hidden widths summing to W with P
parameters, and K adaptation steps (K + 1 sampling rounds, S = K + 1). Its peak, in 4-byte floats,
is a linear model per step-sample plus a per-task term (:func:`estimate_batch_bytes`):

* held per sampling round: the trajectories ``O + 3A + 5`` and the processed batch ``O + 3A + 6``
  (exact: the leaves of :class:`~adaptrl.sampling.Trajectories` and
  :class:`~adaptrl.meta.batch.StepBatch`; a per-task control variate adds ``A − 1``);
* one computation's working memory on top of what is held (fitted, below):

  ========================  ============================  ==================================
  computation               model (floats/step-sample)    measured (min–max over the grid)
  ========================  ============================  ==================================
  sampling                  2·O + 5·A + 8                 7.3 (device rollout, O = A = 2)
  sample processing         6·O + 24                      34 (O = 2), 124 (O = 17), 196 (O = 29)
  adaptation step           2·W + 2·(O + A) + 16          28 (W = 8) … 2.0·W (W = 64 … 256)
  outer step, Adam / ∇      5·W + 4·(O + A) + 32, per S   3.6·W … 4.8·W (K = 1 … 5); 54 (W = 8)
  outer step, TRPO          10·W + 6·(O + A) + 48, per S  8.2·W … 9.4·W (K = 0 … 3)
  meta control variate      8·W_cv + 4·O + 32             6.7·W_cv … 7.4·W_cv (W_cv = 128)
  task control variate      ¾·N·(A + 1)·W_cv + 4·O + 32   1806 (A = 2, N = 8), 3606 (A = 2,
                                                          N = 16), 4366 (A = 6, N = 8)
  ========================  ============================  ==================================

  (K = 0 with Adam: the outer step is a plain policy gradient, the adaptation model; N: the
  control variate's action samples.)
* per task: ``(2·S + 2)·P`` floats of parameter copies (θ_0 … θ_K, their gradients, the optimizer's
  vectors); measured: 3·P (θ_k held, the adaptation step's input and output), and no growth of
  the outer step's working memory from 40 to 400 tasks at the same n.

The phases (floats per step-sample; each adds the per-task term):

* ``sample``   — one sampling round: trajectories + sampling;
* ``eval``     — meta-testing: S·(trajectories + batch) + the largest of adaptation (K ≥ 1),
  sampling, processing and the control variate;
* ``gradient`` — one meta-gradient: S·(trajectories + 2·batch) + S·(outer step, Adam / ∇), at least
  ``eval`` (the stacked batches are a copy of the S batches);
* ``train``    — one iteration: S·(trajectories + 2·batch) + S·(outer step of the optimizer),
  plus a ``gradient`` on top when gradient statistics are logged (``grad_stats_every``),
  at least ``eval``.

How it was measured: every jitted piece of one iteration (the device rollout, ``_process``, the
adaptation step, the outer update and the meta-gradient of :class:`~adaptrl.meta.learner.MetaLearner`,
the control variate's update) was compiled on CPU (JAX 0.10) at abstract shapes and its buffer
assignment read with ``jax.jit(f).lower(...).compile().memory_analysis()`` (``temp_size_in_bytes``;
:func:`compiled_bytes`), for promp, maml-trpo, dice-vpg, vpg, trpo and tmaml on PointCorners
(O = A = 2), HalfCheetahRandDirec (O = 17, A = 6) and AntRandGoal (O = 29, A = 8), M = 40 … 400,
R = 2 … 20, T = 100 … 200, hidden sizes (8), (32, 32), (64, 64), (128, 128), (64, 64, 64), K = 0 … 5.
Working memory is linear in n (doubling M or T doubles it to within 6 %) and independent of the
split of n into M, R and T. Every model above is an upper bound of every measurement: by
1.0–1.1× for the held arrays and processing, 1.05–1.45× for the adaptation step, 1.1–1.6× for the
outer step and the meta-gradient (2.3× for the meta-gradient at W = 8), 1.2–1.3× for the control
variates, 3× for the device rollout (a small term); whole phases (held + working memory, as
compiled) by 1.1–1.5×. The policy's hidden widths are taken as configured, an
over-estimate for a policy without hidden layers (``quadratic_feature``).

Checked against real runs (the peak resident set, ``ru_maxrss``, of one call at M tasks minus
that of the same call at 2 tasks, PointCorners, R = 20, T = 100, hidden (64, 64), K = 1): ProMP
meta-test of 400 tasks 0.93 GB measured, 1.15 GB estimated (1.24×); a ProMP iteration of 100
tasks 1.04 GB vs 1.16 GB (1.11×); a MAML-TRPO iteration of 60 tasks 1.20 GB vs 1.31 GB (1.09×).
The first call of a process adds 0.2–0.4 GB (runtime, compilation), kept by the reserve below.
On the issue's case — ProMP on HalfCheetahRandDirec, ``adaptrl eval --tasks 10000`` with R = 20,
T = 100 — the adaptation step alone is 2·W floats × 2·10⁷ step-samples = 20.5 GB, the
``RESOURCE_EXHAUSTED`` request reported.

The check (:func:`check_fits`) compares the estimate plus :data:`RESERVE_BYTES` (compilation and
the runtime's own growth) with :func:`available_bytes` and raises one :class:`ConfigError` naming
the requested size, the estimate, the memory available and the largest size that fits.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptrl.errors import ConfigError

FLOAT_BYTES = 4
GIB = 2**30
RESERVE_BYTES = 512 * 2**20
"""Kept free on top of the estimate: XLA's compilation and the runtime's growth (≈ 0.1–0.3 GiB
measured for one iteration's programs)."""

MEMORY_ENV = "ADAPTRL_MEMORY_GIB"
"""Environment variable: the memory (GiB) the checks may use, instead of what the machine reports
(e.g. a cluster job's allocation; a large value turns the checks off)."""

PHASES = ("sample", "eval", "gradient", "train")


@dataclass(frozen=True)
class BatchShape:
    """The sizes that determine a batch's memory (module docstring)."""

    tasks: int
    rollouts: int
    horizon: int
    obs_dim: int
    act_dim: int
    hidden_width: int = 0
    """W: the sum of the policy MLP's hidden sizes."""
    param_count: int = 0
    inner_steps: int = 1
    optimizer: str = "adam"
    control_variate: str = "none"
    cv_width: int = 0
    """W_cv: the sum of the control variate's hidden sizes."""
    cv_action_samples: int = 0
    """N: the action samples of a per-task (action-dependent) control variate."""
    grad_stats: bool = False
    env: str = ""

    @property
    def samples(self) -> int:
        """n = M·R·T step-samples per sampling round."""
        return self.tasks * self.rollouts * self.horizon

    @property
    def rounds(self) -> int:
        """S = K + 1 sampling rounds."""
        return self.inner_steps + 1


# ------------------------------------------------------------------- floats per step-sample
def trajectory_floats(s: BatchShape) -> int:
    """Trajectories: observations O, actions A, the Gaussian's mean and log-std 2A, log-prob,
    reward, mask, done, and the final observation (≤ 1 per step)."""
    return s.obs_dim + 3 * s.act_dim + 5


def batch_floats(s: BatchShape) -> int:
    """A processed batch: O + A + 2A (sampling distribution) + mask, reward, advantage, DiCE reward,
    log-prob and the control-variate baseline (A of them for a per-task control variate)."""
    return s.obs_dim + 3 * s.act_dim + 6 + (s.act_dim - 1 if s.control_variate == "task" else 0)


def sampling_floats(s: BatchShape) -> int:
    """Sampling's working memory: the action noise, the packed policy outputs, copies."""
    return 2 * s.obs_dim + 5 * s.act_dim + 8


def processing_floats(s: BatchShape) -> int:
    """Sample processing (returns, the linear feature baseline's 2·O + 4 features, GAE)."""
    return 6 * s.obs_dim + 24


def adaptation_floats(s: BatchShape) -> int:
    """One adaptation step: the MLP's activations and their gradients, ≈ 2 per hidden unit."""
    return 2 * s.hidden_width + 2 * (s.obs_dim + s.act_dim) + 16


def outer_floats(s: BatchShape, optimizer: str) -> int:
    """The outer step per step-sample of the stacked batches: backpropagation through the K
    adaptation steps (Adam, or the meta-gradient alone), plus the KL's Hessian-vector products (TRPO)."""
    width = s.obs_dim + s.act_dim
    if optimizer == "trpo":
        return 10 * s.hidden_width + 6 * width + 48
    if s.inner_steps == 0:
        return adaptation_floats(s)
    return 5 * s.hidden_width + 4 * width + 32


def control_variate_floats(s: BatchShape) -> int:
    """Fitting a control variate on one batch (TMAML): its MLP's activations over the update steps."""
    if s.control_variate == "none":
        return 0
    if s.control_variate == "task":  # its Q-network on N sampled actions per action coordinate
        return 3 * s.cv_action_samples * (s.act_dim + 1) * s.cv_width // 4 + 4 * s.obs_dim + 32
    return 8 * s.cv_width + 4 * s.obs_dim + 32


def per_task_floats(s: BatchShape) -> int:
    """Parameter copies per task: θ_0 … θ_K, their gradients and the optimizer's vectors."""
    return (2 * s.rounds + 2) * s.param_count


def phase_floats(s: BatchShape, phase: str) -> int:
    """Floats per step-sample of ``phase`` (module docstring)."""
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; valid: {', '.join(PHASES)}")
    held = s.rounds * (trajectory_floats(s) + batch_floats(s))
    work = [sampling_floats(s), processing_floats(s), control_variate_floats(s)]
    if s.inner_steps:
        work.append(adaptation_floats(s))
    evaluation = held + max(work)
    if phase == "sample":
        return trajectory_floats(s) + sampling_floats(s)
    if phase == "eval":
        return evaluation
    stacked = held + s.rounds * batch_floats(s)
    gradient = stacked + s.rounds * outer_floats(s, "adam")
    if phase == "gradient":
        return max(evaluation, gradient)
    train = stacked + s.rounds * outer_floats(s, s.optimizer)
    if s.grad_stats:
        train += gradient
    return max(evaluation, train)


def estimate_batch_bytes(shape: BatchShape, phase: str = "train") -> int:
    """Peak bytes of ``phase`` for ``shape``: ``4·(n·f_phase + M·(2·S + 2)·P)``, n = M·R·T and
    f_phase the floats per step-sample of :func:`phase_floats` (module docstring)."""
    floats = shape.samples * phase_floats(shape, phase) + shape.tasks * per_task_floats(shape)
    return FLOAT_BYTES * floats


# ----------------------------------------------------------------------- available memory
def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return None


def _cgroup_headroom() -> int | None:
    """Limit minus usage of this process's cgroup (v2, else v1), None without a limit."""
    for limit_file, usage_file in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        limit = _read_int(Path("/sys/fs/cgroup") / limit_file)
        usage = _read_int(Path("/sys/fs/cgroup") / usage_file)
        if limit is not None and usage is not None and limit < 2**60:
            return max(limit - usage, 0)
    return None


def _accelerator_free() -> int | None:
    """Free memory of JAX's default device when it is not the CPU."""
    import jax

    if jax.default_backend() == "cpu":
        return None
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # pragma: no cover - backends without memory statistics
        return None
    if "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def available_bytes() -> int | None:
    """Memory the checks may use, None when unknown: ``$ADAPTRL_MEMORY_GIB`` when set; else the
    smallest of the host's ``MemAvailable`` (/proc/meminfo), the cgroup limit's headroom (a container
    or a cluster job) and, on a GPU/TPU, the default device's free memory."""
    override = os.environ.get(MEMORY_ENV)
    if override:
        try:
            return int(float(override) * GIB)
        except ValueError:
            raise ConfigError(f"{MEMORY_ENV} must be a number of GiB, got {override!r}.") from None
    known = [v for v in (_meminfo_available(), _cgroup_headroom(), _accelerator_free()) if v is not None]
    return min(known) if known else None


# --------------------------------------------------------------------------------- the check
def largest_fitting(shape: BatchShape, phase: str, vary: str, budget: int) -> int:
    """The largest value of field ``vary`` (``tasks``, ``rollouts`` or ``horizon``), at most its
    value in ``shape``, whose estimate fits ``budget`` bytes (0 when not even 1 does)."""
    low, high = 0, getattr(shape, vary)
    while low < high:  # the estimate grows with each size: bisect
        mid = (low + high + 1) // 2
        if estimate_batch_bytes(dataclasses.replace(shape, **{vary: mid}), phase) <= budget:
            low = mid
        else:
            high = mid - 1
    return low


_PHASE_TEXT = {"sample": "one sampling round", "eval": "meta-testing", "gradient": "one meta-gradient",
               "train": "one training iteration"}


def describe(shape: BatchShape, phase: str) -> str:
    """``M tasks × R rollouts × T steps of ENV, S sampling rounds (…)``, for messages."""
    env = f" of {shape.env}" if shape.env else ""
    text = f"{shape.tasks} tasks × {shape.rollouts} rollouts × {shape.horizon} steps{env}"
    if phase != "sample":
        k = shape.inner_steps
        steps = f"{k} adaptation step{'' if k == 1 else 's'}"
        text += f", {shape.rounds} sampling round{'s' if k else ''} ({steps})"
    return f"{_PHASE_TEXT[phase]}: {text}"


def check_fits(shape: BatchShape, phase: str, *, request: str, vary: str, label: str,
               alternatives: str = "") -> None:
    """Raise a :class:`ConfigError` unless ``phase`` of ``shape`` fits :func:`available_bytes`
    (less :data:`RESERVE_BYTES`): ``request`` (what the user asked, e.g. ``--tasks 10000``) needs
    about X GiB, Y GiB is available, and the largest ``label`` (the user's name of field ``vary``)
    that fits; ``alternatives`` names the other sizes to lower. Nothing is allocated."""
    available = available_bytes()
    if available is None:
        return
    needed = estimate_batch_bytes(shape, phase)
    budget = available - RESERVE_BYTES
    if needed <= budget:
        return
    largest = largest_fitting(shape, phase, vary, budget)
    other = f" (or lower {alternatives})" if alternatives else ""
    fit = (f"the largest {label} that fits is {largest}{other}" if largest else
           f"it does not fit even at {label} = 1; lower {alternatives or 'the other sizes'}")
    raise ConfigError(
        f"{request} needs about {needed / GIB:.1f} GiB of memory ({describe(shape, phase)}), but "
        f"{available / GIB:.1f} GiB is available; {fit}. Set {MEMORY_ENV} to override the memory "
        "the check assumes.")


# ------------------------------------------------- the training check at the learner's build
_TRAINING_CHECK = contextvars.ContextVar("adaptrl_training_memory_check", default=True)


def training_check_enabled() -> bool:
    """Whether building a learner checks its training batch (off inside :func:`no_training_check`)."""
    return _TRAINING_CHECK.get()


@contextlib.contextmanager
def no_training_check() -> Iterator[None]:
    """Build learners without their training-batch check: for commands that do not train (eval,
    the gradient study), which check their own sizes instead."""
    token = _TRAINING_CHECK.set(False)
    try:
        yield
    finally:
        _TRAINING_CHECK.reset(token)


def compiled_bytes(jitted: Any, *args: Any, **kwargs: Any) -> dict[str, int]:
    """What XLA assigns to ``jitted`` at these (abstract, ``jax.ShapeDtypeStruct``) arguments,
    without running it: ``{"argument", "output", "temp", "total"}`` bytes from
    ``jitted.lower(...).compile().memory_analysis()`` — how the models above were measured."""
    stats = jitted.lower(*args, **kwargs).compile().memory_analysis()
    out = {"argument": int(stats.argument_size_in_bytes), "output": int(stats.output_size_in_bytes),
           "temp": int(stats.temp_size_in_bytes)}
    out["total"] = out["argument"] + out["output"] + out["temp"] - int(stats.alias_size_in_bytes)
    return out
