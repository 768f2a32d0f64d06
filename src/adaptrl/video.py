"""Videos of adaptation (``adaptrl video``; docs/environments.md, "Videos").

For a meta-RL run directory and each of N fresh tasks: the episode of the pre-update policy θ_0
and of every adapted policy θ_1 … θ_K, one after the other in one mp4 per task
(``task_00.mp4`` …), with the task, the step and the running return written on every frame, and
one PNG still per task (the last frame of the final adapted episode, ``task_00.png``).

* Adaptation is meta-testing's (:func:`~adaptrl.algorithms.meta_rl.sample_and_adapt`): θ_k → θ_{k+1}
  on a fresh batch of ``rollouts_per_task`` trajectories per task, sampled by the batched sampler;
  its ``step_params`` are the policies filmed. The tasks are those ``adaptrl eval --tasks N`` draws
  with the same seed (``env.sample_tasks(n, seed=task_seed(...))``; default seed: the run's seed +
  1,000,003).
* The filmed episodes run in the Gymnasium env :class:`~adaptrl.envs.gym_env.MetaEnv` (a batch of
  one on the same simulator), one episode per step, all steps of a task from the same start state.
  The policy's action goes to ``MetaEnv.step`` exactly as the sampler gives it to the vector env
  (the env rescales and clips it, :func:`~adaptrl.envs.base.env_action`): the policy mean by
  default, a sample with ``stochastic``.
* One frame per environment step, taken after the step (the running return includes its reward):
  ``horizon`` frames per episode, fewer when an episode terminates, so ``(K + 1) · horizon`` frames
  per video for families that never terminate. Point and 1-D families are drawn without OpenGL;
  MuJoCo families through ``mujoco.Renderer`` (:mod:`adaptrl.envs.rendering`: the backend rule and
  the one error when no OpenGL context can be made), with the camera that follows the robot
  (``MetaEnv(camera="track")``).
* Text: Pillow's default font; mp4: ``imageio`` with the ``imageio-ffmpeg`` plugin (H.264, yuv420p,
  so width and height must be even), both in the ``video`` extra.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from adaptrl import memory
from adaptrl.algorithms.meta_rl import MetaRL, sample_and_adapt, task_seed
from adaptrl.envs import is_single_task
from adaptrl.envs.base import Task, unstack_tasks
from adaptrl.envs.gym_env import TRACK_CAMERA, MetaEnv
from adaptrl.errors import ConfigError
from adaptrl.experiment.evaluation import check_eval_memory
from adaptrl.experiment.rundir import load_run_config
from adaptrl.experiment.trainer import build_algorithm, restore
from adaptrl.meta.config import TrainConfig
from adaptrl.policies import Params, Policy

INSTALL_HINT = 'pip install -e ".[video]"'
"""How to install what writing mp4 files needs (the ``video`` extra)."""

VIDEO_DIR = "videos"
"""Default output folder, inside the run directory."""

EVAL_SEED_OFFSET = 1_000_003
"""Default seed: the run's seed plus this, as ``adaptrl eval`` (tasks disjoint from training)."""

MIN_FPS, MAX_FPS = 10, 30
"""The default frame rate is the env's real-time rate (1 / dt) clipped to this range."""

TEXT_COLOUR = (255, 255, 255, 255)
BOX_COLOUR = (0, 0, 0, 150)


@dataclass
class Episode:
    """One filmed episode of the policy θ_``step``: ``frames[t]`` is the picture after env step t
    (raw, without text), ``rewards[t]`` that step's reward, ``observations[t]`` the observation the
    policy acted on at step t (``observations[-1]``: the one after the last step), ``actions[t]``
    the policy action given to ``MetaEnv.step``."""

    step: int
    frames: list[np.ndarray]
    rewards: np.ndarray
    observations: np.ndarray
    actions: np.ndarray
    terminated: bool = False

    @property
    def total_return(self) -> float:
        """Undiscounted return of the episode."""
        return float(np.sum(self.rewards))


@dataclass
class TaskVideo:
    """The video and still of one task, and the return of each step's episode."""

    index: int
    task: Task
    label: str
    video: Path
    still: Path
    returns: list[float]
    frames: int


@dataclass
class VideoReport:
    """What :func:`make_videos` wrote."""

    run_dir: str
    iteration: int
    env: str
    out: Path
    adapt_steps: int
    seed: int
    fps: int
    width: int
    height: int
    stochastic: bool
    videos: list[TaskVideo] = field(default_factory=list)


# ----------------------------------------------------------------------------------- checks
def require_mp4_writer() -> Any:
    """The ``imageio`` module with a working ffmpeg plugin, or one :class:`ConfigError` naming
    :data:`INSTALL_HINT`."""
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        raise ConfigError(f"writing mp4 videos needs imageio and imageio-ffmpeg ({exc}); install them "
                          f"with {INSTALL_HINT}.") from None
    return imageio


def check_video_args(*, tasks: int, adapt_steps: int | None, fps: int | None, width: int,
                     height: int) -> None:
    """One :class:`ConfigError` for the first bad argument of :func:`make_videos`."""
    if int(tasks) < 1:
        raise ConfigError(f"--tasks must be ≥ 1, got {tasks}.")
    if adapt_steps is not None and int(adapt_steps) < 0:
        raise ConfigError(f"--adapt-steps must be ≥ 0, got {adapt_steps}.")
    if fps is not None and int(fps) < 1:
        raise ConfigError(f"--fps must be ≥ 1, got {fps}.")
    for name, value in (("--width", width), ("--height", height)):
        if int(value) < 16 or int(value) % 2:
            raise ConfigError(f"{name} must be an even number of pixels ≥ 16 (H.264 video), got {value}.")


def check_filmable(config: TrainConfig, run_dir: str | Path) -> None:
    """One :class:`ConfigError` unless ``config`` is a run on a multi-task family (whether its
    algorithm is gradient-based meta-RL is checked by :func:`load_meta_run`)."""
    if is_single_task(config.env):
        raise ConfigError(f"{_unsupported(config, run_dir)}, a single-task environment.")


def _unsupported(config: TrainConfig, run_dir: str | Path) -> str:
    return (f"adaptrl video films meta-RL runs on a multi-task family (promp, maml-trpo, … on e.g. "
            f"PointCorners or HalfCheetahRandDirec: pre-update and adapted episodes); {run_dir} is a "
            f"{config.algo} run on {config.env}")


def load_meta_run(run_dir: str | Path, config: TrainConfig | None = None, iteration: int | None = None,
                  ) -> tuple[TrainConfig, MetaRL, Any, dict[str, Any]]:
    """Config (``config``: already loaded), meta-RL algorithm (close it), restored state and
    checkpoint metadata of ``run_dir`` (its latest checkpoint, or its snapshot after ``iteration``
    iterations); one :class:`ConfigError` for anything but a meta-RL run on
    a task family."""
    config = load_run_config(run_dir) if config is None else config
    check_filmable(config, run_dir)
    with memory.no_training_check():  # nothing is trained; the adaptation's sizes are checked instead
        algorithm = build_algorithm(config)
    if not isinstance(algorithm, MetaRL):
        algorithm.close()
        raise ConfigError(f"{_unsupported(config, run_dir)}, which is not gradient-based meta-RL.")
    try:
        state, meta = restore(algorithm, config, run_dir, iteration)
    except BaseException:
        algorithm.close()
        raise
    return config, algorithm, state, meta


def video_env(config: TrainConfig, width: int, height: int) -> MetaEnv:
    """The Gymnasium env the episodes of ``config``'s runs are filmed in (rendering ``rgb_array``
    frames of ``width`` × ``height``; MuJoCo: the camera that follows the robot)."""
    options = {k: v for k, v in config.env_options.items() if k != "horizon"}
    return MetaEnv(config.env, render_mode="rgb_array", width=int(width), height=int(height),
                   camera=TRACK_CAMERA, **options)


def check_rendering(env: MetaEnv) -> None:
    """Render one frame, so that a missing OpenGL (MuJoCo families) is reported, as the one error
    of :mod:`adaptrl.envs.rendering`, before any adaptation is computed."""
    env.reset(seed=0)
    env.render()


# ----------------------------------------------------------------------------- adaptation
def adapted_params(algorithm: MetaRL, meta_params: dict, tasks: dict, key: jax.Array,
                   steps: int) -> list[Params]:
    """θ_0 … θ_``steps`` per task (leading task axis), adapted as in meta-testing; the last
    policy is not sampled with (only its parameters are needed)."""
    result = sample_and_adapt(algorithm, meta_params, tasks, key, steps, sample_final=False)
    return result.step_params


def task_params(params: Params, index: int) -> Params:
    """One task's parameters out of a pytree with a leading task axis."""
    return jax.tree_util.tree_map(lambda x: x[index], params)


# ------------------------------------------------------------------------------- episodes
@functools.lru_cache(maxsize=8)
def _jitted_sample(policy: Policy) -> Any:
    return jax.jit(policy.sample)


def policy_action(policy: Policy, params: Params, obs: np.ndarray,
                  key: jax.Array | None = None) -> np.ndarray:
    """The action the sampler would give the env for ``obs`` (float32, as the sampler's
    observations): ``policy.sample`` with zero noise (the mean of a Gaussian policy) for
    ``key=None``, else with ``policy.sample_noise(key)``."""
    obs = jnp.asarray(np.asarray(obs, np.float32)[None])
    noise = policy.sample_noise(key if key is not None else jax.random.PRNGKey(0), (1,))
    if key is None:
        noise = jax.tree_util.tree_map(jnp.zeros_like, noise)
    action, _, _ = _jitted_sample(policy)(params, obs, noise)
    return np.asarray(action[0], np.float32)


def run_episode(env: MetaEnv, policy: Policy, params: Params, task: Task, *, horizon: int, seed: int,
                step: int = 0, key: jax.Array | None = None, render: bool = True) -> Episode:
    """One episode of ``policy`` with one task's ``params`` in ``env`` (reset with ``seed`` and
    ``task``), at most ``horizon`` steps; deterministic (the mean) for ``key=None``, else sampled
    with ``fold_in(key, t)`` at step t. With ``render``, ``env.render()`` after every step."""
    obs, _ = env.reset(seed=int(seed), options={"task": task})
    observations, actions, rewards, frames = [obs], [], [], []
    terminated = False
    for t in range(int(horizon)):
        action = policy_action(policy, params, obs, None if key is None else jax.random.fold_in(key, t))
        obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        if render:
            frames.append(env.render())
        if terminated or truncated:
            break
    return Episode(step, frames, np.asarray(rewards, np.float64), np.asarray(observations),
                   np.asarray(actions), bool(terminated))


def episode_seed(seed: int, task_index: int) -> int:
    """The reset seed of task ``task_index``'s episodes (the same for all its steps)."""
    return int(np.random.SeedSequence([int(seed), int(task_index)]).generate_state(1)[0] % (2**31 - 1))


# ---------------------------------------------------------------------------------- text
def format_value(value: Any) -> str:
    """A task parameter in short: ``-1``, ``(2, -2)``; more than 3 numbers: their range."""
    arr = np.asarray(value, np.float64).ravel()
    if arr.size == 1:
        return f"{arr[0]:.3g}"
    if arr.size <= 3:
        return "(" + ", ".join(f"{x:.3g}" for x in arr) + ")"
    return f"{arr.size} values in [{arr.min():.3g}, {arr.max():.3g}]"


def task_label(task: Task) -> str:
    """The task in words: ``goal (2, -2)``, ``direction -1``, ``body_mass 5 values in […]; …``."""
    return "; ".join(f"{name} {format_value(value)}" for name, value in task.items())


def step_label(step: int) -> str:
    """``step 0 (pre-update)``, ``step 1`` …"""
    return f"step {step} (pre-update)" if step == 0 else f"step {step}"


@functools.lru_cache(maxsize=8)
def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow ≥ 10.1 with FreeType: a scalable font
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def annotate(frame: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """``frame`` (``[H, W, 3]`` uint8) with ``lines`` written at its top left, white on a
    translucent black box; the font scales with the frame's height."""
    from PIL import Image, ImageDraw

    height = frame.shape[0]
    font = _font(max(8, height // 18))
    image = Image.fromarray(np.ascontiguousarray(frame[..., :3], np.uint8)).convert("RGBA")
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    pad, y = max(2, height // 80), max(2, height // 80)
    boxes = []
    for line in lines:
        _, _, right, bottom = draw.textbbox((pad, y), line, font=font)
        boxes.append((line, y, right, bottom))
        y = bottom + pad
    if boxes:
        draw.rectangle((0, 0, max(b[2] for b in boxes) + pad, y), fill=BOX_COLOUR)
        for line, line_y, _, _ in boxes:
            draw.text((pad, line_y), line, font=font, fill=TEXT_COLOUR)
    return np.asarray(Image.alpha_composite(image, overlay).convert("RGB"))


def annotated_frames(episode: Episode, header: str) -> Iterator[np.ndarray]:
    """The frames of ``episode`` with ``header`` (the task), the step and the running return."""
    running = np.cumsum(episode.rewards)
    for frame, ret in zip(episode.frames, running, strict=True):
        yield annotate(frame, [header, step_label(episode.step), f"return {ret:.2f}"])


# -------------------------------------------------------------------------------- files
@contextlib.contextmanager
def ffmpeg_subprocess_quiet() -> Iterator[None]:
    """Silence JAX's warning about ``os.fork()`` while imageio starts ffmpeg: its child process
    only ``exec``s the ffmpeg binary and runs no JAX, so the deadlock it warns of cannot occur."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        yield


def open_mp4(path: str | Path, fps: int) -> Any:
    """An imageio writer of an H.264 mp4 at ``fps`` (frames are written at their own size; ffmpeg
    starts on the first frame, so write inside :func:`ffmpeg_subprocess_quiet`)."""
    imageio = require_mp4_writer()
    return imageio.get_writer(str(path), format="FFMPEG", mode="I", fps=int(fps), codec="libx264",
                              pixelformat="yuv420p", macro_block_size=1, quality=8,
                              ffmpeg_log_level="error")


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], fps: int) -> int:
    """Write ``frames`` to an mp4 at ``path``; returns the number of frames written."""
    count = 0
    with ffmpeg_subprocess_quiet(), open_mp4(path, fps) as writer:
        for frame in frames:
            writer.append_data(frame)
            count += 1
    return count


def write_png(path: str | Path, frame: np.ndarray) -> Path:
    """``frame`` as a PNG at ``path``."""
    from PIL import Image

    Image.fromarray(np.asarray(frame, np.uint8)).save(path)
    return Path(path)


def default_fps(env: MetaEnv) -> int:
    """The env's real-time frame rate (1 / dt) within [:data:`MIN_FPS`, :data:`MAX_FPS`]."""
    return int(min(max(env.metadata.get("render_fps", MIN_FPS), MIN_FPS), MAX_FPS))


# --------------------------------------------------------------------------------- verb
def make_videos(run_dir: str | Path, *, tasks: int = 2, adapt_steps: int | None = None,
                out: str | Path | None = None, seed: int | None = None, fps: int | None = None,
                width: int = 320, height: int = 240, stochastic: bool = False,
                iteration: int | None = None) -> VideoReport:
    """For ``tasks`` fresh tasks of ``run_dir``'s latest checkpoint (or of its snapshot after
    ``iteration`` iterations), one mp4 (pre-update and each adapted policy's episode in sequence,
    ``adapt_steps`` steps, default the training K) and one PNG still per task in ``out`` (default
    ``run_dir/videos``, for a snapshot ``run_dir/videos/itr_N``); see the module docstring."""
    check_video_args(tasks=tasks, adapt_steps=adapt_steps, fps=fps, width=width, height=height)
    require_mp4_writer()
    config = load_run_config(run_dir)
    check_filmable(config, run_dir)
    env = video_env(config, width, height)
    try:
        check_rendering(env)
        config, algorithm, state, meta = load_meta_run(run_dir, config, iteration)
        try:
            steps = config.inner_steps if adapt_steps is None else int(adapt_steps)
            check_eval_memory(algorithm, tasks=int(tasks), adapt_steps=steps, command="adaptrl video",
                              alternatives="--adapt-steps")
            seed = config.seed + EVAL_SEED_OFFSET if seed is None else int(seed)
            task_key, sample_key = jax.random.split(jax.random.PRNGKey(seed))
            task_batch = algorithm.env.sample_tasks(int(tasks), seed=task_seed(task_key))
            params = adapted_params(algorithm, state.meta_params, task_batch, sample_key, steps)
            policy = algorithm.learner.policy
        finally:
            algorithm.close()
        if out is None:
            out = Path(run_dir) / VIDEO_DIR
            if iteration is not None:
                out = out / f"itr_{int(meta['iteration'])}"
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        fps = default_fps(env) if fps is None else int(fps)
        report = VideoReport(str(run_dir), int(meta["iteration"]), config.env, out, steps, seed, fps,
                             int(width), int(height), bool(stochastic))
        noise_key = jax.random.fold_in(jax.random.PRNGKey(seed), 3)
        for i, task in enumerate(unstack_tasks(task_batch)):
            report.videos.append(film_task(
                env, policy, [task_params(p, i) for p in params], task, index=i, out=out,
                horizon=config.horizon, seed=episode_seed(seed, i), fps=fps,
                key=jax.random.fold_in(noise_key, i) if stochastic else None))
    finally:
        env.close()
    return report


def film_task(env: MetaEnv, policy: Policy, step_params: Sequence[Params], task: Task, *, index: int,
              out: Path, horizon: int, seed: int, fps: int, key: jax.Array | None = None) -> TaskVideo:
    """``out/task_II.mp4`` with the episodes of ``step_params`` (θ_0 … θ_K of one task) in
    sequence, and ``out/task_II.png``, the last frame of the final episode."""
    label = task_label(task)
    video, still = out / f"task_{index:02d}.mp4", out / f"task_{index:02d}.png"
    returns, count, last = [], 0, None
    with ffmpeg_subprocess_quiet(), open_mp4(video, fps) as writer:
        for k, params in enumerate(step_params):
            episode = run_episode(env, policy, params, task, horizon=horizon, seed=seed, step=k,
                                  key=None if key is None else jax.random.fold_in(key, k))
            for frame in annotated_frames(episode, f"task {index}: {label}"):
                writer.append_data(frame)
                count += 1
                last = frame
            returns.append(episode.total_return)
    if last is not None:
        write_png(still, last)
    return TaskVideo(index, task, label, video, still, returns, count)


def mean_returns(report: VideoReport) -> list[float]:
    """Mean episode return across the filmed tasks, per step (NaN without tasks)."""
    if not report.videos:
        return [math.nan] * (report.adapt_steps + 1)
    return [float(np.mean([v.returns[k] for v in report.videos])) for k in range(report.adapt_steps + 1)]
