"""``adaptrl video`` (docs/environments.md, "Videos"): one mp4 per task with the pre-update and each
adapted policy's episode in sequence, the text on the frames, the stills, the printed returns; a
MuJoCo video through EGL in a subprocess; the one error for bad input; and the filmed actions are
those the sampler gives the env."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adaptrl import video
from adaptrl.cli import main
from adaptrl.envs.gym_env import MetaEnv
from adaptrl.errors import ConfigError
from adaptrl.experiment.checkpoints import save_checkpoint
from adaptrl.experiment.config import build_config
from adaptrl.experiment.rundir import prepare_run_dir, write_run_config
from adaptrl.experiment.seeding import init_key
from adaptrl.experiment.trainer import build_algorithm, train
from adaptrl.policies import GaussianPolicy, init_params, make_policy, per_task
from adaptrl.sampling import Sampler
from test_rendering import HAVE_EGL, HAVE_OSMESA

ROOT = Path(__file__).resolve().parents[1]
HORIZON = 8
QUIET = dict(show_progress=False, tensorboard=False, make_plots=False)


def read_frames(path: Path) -> np.ndarray:
    """Every decoded frame of an mp4, ``[N, H, W, 3]``."""
    import imageio.v2 as imageio

    with video.ffmpeg_subprocess_quiet(), imageio.get_reader(str(path), format="FFMPEG") as reader:
        return np.stack([frame for frame in reader])  # list(reader) would trust len(): inf


def untrained_run(config, run_dir: Path) -> None:
    """A run directory holding ``config`` and the checkpoint of its initial state (iteration 0):
    what ``adaptrl train`` writes, without compiling and running an outer step."""
    prepare_run_dir(config, run_dir)
    algorithm = build_algorithm(config)
    try:
        state = algorithm.init(init_key(config.seed))
    finally:
        algorithm.close()
    save_checkpoint(run_dir, state, {"iteration": 0, "seed": config.seed, "n_timesteps": 0, "time": 0.0})


@pytest.fixture(scope="module")
def point_run(tmp_path_factory) -> Path:
    """A 1-iteration ProMP run on PointCorners with the dense reward (returns differ from 0)."""
    run_dir = tmp_path_factory.mktemp("video") / "promp-point"
    config = build_config("promp", "PointCorners", overrides={
        "tasks_per_iter": 2, "rollouts_per_task": 2, "horizon": HORIZON, "iterations": 1,
        "env_options": {"reward_type": "dense"}})
    train(config, run_dir, **QUIET)
    return run_dir


def test_point_video_through_the_cli(point_run, tmp_path, capsys, monkeypatch):
    """Per task: an mp4 of (K + 1)·horizon frames of the asked size, the step written on the frames,
    a PNG equal to the video's last frame; the printed returns are the filmed episodes' returns."""
    episodes, tasks = [], []
    real_run_episode = video.run_episode

    def recording(env, policy, params, task, **kwargs):
        episodes.append(real_run_episode(env, policy, params, task, **kwargs))
        tasks.append(task)
        return episodes[-1]

    monkeypatch.setattr(video, "run_episode", recording)
    out, k = tmp_path / "videos", 2
    assert main(["video", str(point_run), "--tasks", "2", "--adapt-steps", str(k), "--out", str(out),
                 "--width", "96", "--height", "64", "--seed", "5"]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["task_00.mp4", "task_00.png", "task_01.mp4",
                                                     "task_01.png"]
    assert [e.step for e in episodes] == [0, 1, 2, 0, 1, 2]
    assert all(len(e.frames) == len(e.rewards) == HORIZON for e in episodes)
    for i in range(2):
        frames = read_frames(out / f"task_{i:02d}.mp4")
        assert frames.shape == ((k + 1) * HORIZON, 64, 96, 3)
        assert np.abs(frames[HORIZON - 1].astype(float) - frames[2 * HORIZON - 1]).mean() > 1
        # frame t of step 1 carries the task, "step 1" and the running return, not another step's text
        episode, t = episodes[3 * i + 1], 5
        header = f"task {i}: {video.task_label(tasks[3 * i])}"
        ret = f"return {episode.rewards[:t + 1].sum():.2f}"
        decoded = frames[HORIZON + t].astype(float)
        expected = video.annotate(episode.frames[t], [header, "step 1", ret])
        for wrong in ([header, "step 2", ret], [header, "step 1", "return 9.99"], ["task 7", "step 1", ret]):
            assert (np.abs(decoded - expected).mean()
                    < np.abs(decoded - video.annotate(episode.frames[t], wrong)).mean())
        from PIL import Image

        still = np.asarray(Image.open(out / f"task_{i:02d}.png"))
        assert still.shape == (64, 96, 3)
        last, first = (np.abs(still.astype(float) - frames[j]).mean() for j in (-1, 0))
        assert last < 6 and first > last  # the final frame (the mp4 is lossy)
    # adaptation changed the policy: each adapted episode's trajectory differs from the pre-update one
    for task in (episodes[:3], episodes[3:]):
        assert not np.allclose(task[0].observations, task[1].observations)
        assert not np.allclose(task[1].observations, task[2].observations)
        np.testing.assert_allclose(task[0].observations[0], task[2].observations[0])  # same start
    rows = re.findall(r"step (\d)(?: \(pre-update\))?\s*│\s*(-?\d+\.\d\d)", printed)
    assert [int(s) for s, _ in rows] == [0, 1, 2, 0, 1, 2]
    assert [float(r) for _, r in rows] == [round(e.total_return, 2) for e in episodes]
    assert len({round(e.total_return, 2) for e in episodes}) > 1
    assert "goal (" in printed and "task_00.mp4" in printed


@pytest.fixture(scope="module")
def cheetah_run(tmp_path_factory) -> Path:
    """An untrained ProMP run on HalfCheetahRandDirec, horizon 10."""
    run_dir = tmp_path_factory.mktemp("video") / "promp-hc"
    untrained_run(build_config("promp", "HalfCheetahRandDirec", overrides={
        "tasks_per_iter": 2, "rollouts_per_task": 2, "horizon": 10, "iterations": 1}), run_dir)
    return run_dir


def video_subprocess(run_dir: Path, out: Path, **env_changes: str) -> subprocess.CompletedProcess:
    """``adaptrl video`` of one task's pre-update episode (no adaptation: the point test covers it,
    and this keeps the file fast), 64x48, in a fresh Python."""
    env = dict(os.environ, **env_changes)
    return subprocess.run([sys.executable, "-m", "adaptrl.cli", "video", str(run_dir), "--tasks", "1",
                           "--adapt-steps", "0", "--width", "64", "--height", "48", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not HAVE_EGL, reason="libEGL is not loadable on this machine (needed by MUJOCO_GL=egl)")
def test_halfcheetah_video_with_egl_in_a_subprocess(cheetah_run, tmp_path):
    """A MuJoCo family renders through mujoco.Renderer with EGL: the frames are pictures, not blank."""
    out = tmp_path / "out"
    result = video_subprocess(cheetah_run, out, MUJOCO_GL="egl")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "direction" in result.stdout
    frames = read_frames(out / "task_00.mp4")
    assert frames.shape == (10, 48, 64, 3)
    below_text = frames[:, 36:].astype(float)  # under the text box
    assert below_text.std(axis=(1, 2, 3)).min() > 5, "blank frames"
    assert all(len(np.unique(f.reshape(-1, 3), axis=0)) > 20 for f in below_text.astype(np.uint8))
    assert (out / "task_00.png").is_file()


@pytest.mark.skipif(HAVE_OSMESA, reason="libOSMesa is installed: MUJOCO_GL=osmesa renders")
def test_no_opengl_is_the_one_rendering_error(cheetah_run, tmp_path):
    """MUJOCO_GL=osmesa without libOSMesa: one error line (the rendering module's), exit status 2,
    before any adaptation, and no files."""
    result = video_subprocess(cheetah_run, tmp_path / "out", MUJOCO_GL="osmesa")
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: MuJoCo could not open an OpenGL context"), lines
    assert "backend MUJOCO_GL=osmesa" in lines[0] and "MUJOCO_GL=egl" in lines[0]
    assert not (tmp_path / "out").exists()


def test_track_camera_follows_the_robot(cheetah_run, monkeypatch):
    """``camera="track"`` renders with a tracking camera on the root body; the default stays the free
    camera (``update_scene`` without a camera); an unknown camera is one error naming the valid ones."""
    import mujoco

    scenes = []

    class Recorder:
        def __init__(self, model, height, width):
            self.shape = (height, width, 3)

        def update_scene(self, data, **kwargs):
            scenes.append(kwargs.get("camera"))

        def render(self):
            return np.zeros(self.shape, np.uint8)

        def close(self):
            pass

    monkeypatch.setattr("adaptrl.envs.gym_env.make_renderer", Recorder)
    for camera in ("track", None, "nope"):
        env = MetaEnv("HalfCheetahRandDirec", render_mode="rgb_array", camera=camera)
        try:
            env.reset(seed=0)
            if camera == "nope":
                with pytest.raises(ConfigError, match=r"'track'.*\['track'\]"):
                    env.render()
            else:
                env.render()
        finally:
            env.close()
    track, free = scenes
    assert track.type == mujoco.mjtCamera.mjCAMERA_TRACKING and track.trackbodyid == 1
    assert free is None


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_bad_input_is_one_error(point_run, tmp_path, capsys, monkeypatch):
    run = str(point_run)
    assert "--tasks must be ≥ 1, got 0" in _error(capsys, ["video", run, "--tasks", "0"])
    assert "--adapt-steps must be ≥ 0, got -1" in _error(capsys, ["video", run, "--adapt-steps", "-1"])
    assert "--width must be an even" in _error(capsys, ["video", run, "--width", "95"])
    assert "--fps must be ≥ 1" in _error(capsys, ["video", run, "--fps", "0"])
    assert "is not a run directory" in _error(capsys, ["video", str(tmp_path / "missing")])
    single = tmp_path / "single"
    single.mkdir()
    write_run_config(build_config("trpo", "HalfCheetah"), single)
    err = _error(capsys, ["video", str(single)])
    assert "meta-RL runs on a multi-task family" in err and "single-task" in err
    model_based = tmp_path / "mb"
    model_based.mkdir()
    write_run_config(build_config("mb-mpc", "PointCorners"), model_based)
    assert "not gradient-based meta-RL" in _error(capsys, ["video", str(model_based)])
    monkeypatch.setenv("ADAPTRL_MEMORY_GIB", "0.01")  # checked before anything is sampled
    assert "adaptrl video --tasks 3 needs about" in _error(capsys, ["video", run, "--tasks", "3"])
    monkeypatch.delenv("ADAPTRL_MEMORY_GIB")
    assert not (point_run / "videos").exists()
    monkeypatch.setitem(sys.modules, "imageio", None)  # as if the video extra were not installed
    assert 'pip install -e ".[video]"' in _error(capsys, ["video", run])


def test_video_of_a_snapshot(point_run, tmp_path, capsys):
    """--iteration N films the snapshot kept after N iterations (default out RUN_DIR/videos/itr_N);
    here the snapshot is a copy of the latest checkpoint, so the filmed returns equal the latest's.
    A run without that snapshot gives one error naming what it keeps."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(point_run, run)
    assert "keeps no snapshots" in _error(capsys, ["video", str(run), "--iteration", "1"])
    shutil.copyfile(run / "checkpoints" / "latest.npz", run / "checkpoints" / "itr_000001.npz")
    args = ["--tasks", "1", "--width", "32", "--height", "32"]
    assert main(["video", str(run), "--iteration", "1", *args]) == 0
    snapshot_table = capsys.readouterr().out
    assert (run / "videos" / "itr_1" / "task_00.mp4").is_file()
    assert main(["video", str(run), *args]) == 0
    latest_table = capsys.readouterr().out
    assert "(iteration 1)" in snapshot_table
    def mean_line(table):
        return next(line for line in table.splitlines() if line.startswith("mean return:"))

    assert mean_line(snapshot_table) == mean_line(latest_table)  # "mean return: step 0 …, step 1 …"
    err = _error(capsys, ["video", str(run), "--iteration", "2"])
    assert "no snapshot after iteration 2; it keeps 1" in err


def test_filmed_actions_are_the_samplers(make_env):
    """Point2DNavigation starts at (0, 0): the sampler with zero action noise and the filmed
    episode with the mean action give the same observations and rewards (actions beyond the ±0.1
    bound included, so the env's clipping is applied once in both)."""

    @dataclasses.dataclass(frozen=True)
    class ZeroNoise(GaussianPolicy):
        def sample_noise(self, key, batch_shape):
            return jnp.zeros((*batch_shape, self.act_dim))

    venv = make_env("Point2DNavigation")
    base = make_policy(venv.spec.act_dim, (16,))
    params = init_params(base, jax.random.PRNGKey(1), venv.spec.obs_dim)
    leaves, tree = jax.tree_util.tree_flatten(params)  # random biases too: the mean at s = 0 is not 0
    keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
    params = jax.tree_util.tree_unflatten(tree, [x + 0.3 * jax.random.normal(k, x.shape)
                                                 for x, k in zip(leaves, keys, strict=True)])
    task = {"goal": np.array([0.4, -0.3])}
    traj = Sampler(venv, ZeroNoise(base.module, base.act_dim), 1, 12).collect(
        per_task(params, 1), {"goal": task["goal"][None]}, jax.random.PRNGKey(0))
    env = MetaEnv("Point2DNavigation")
    try:
        episode = video.run_episode(env, base, params, task, horizon=12, seed=3, render=False)
    finally:
        env.close()
    assert np.abs(episode.actions).max() > 0.1  # some actions are clipped by the env
    np.testing.assert_allclose(episode.observations[:-1], np.asarray(traj.observations)[0, 0], atol=1e-5)
    np.testing.assert_allclose(episode.rewards, np.asarray(traj.rewards)[0, 0], atol=1e-5)
    np.testing.assert_allclose(episode.actions, np.asarray(traj.actions)[0, 0], atol=1e-6)


def test_normalised_actions_reach_the_env_once():
    """PointCorners normalises actions (the policy acts in ±10, the env moves ±0.2): the filmed
    episode follows s' = s + clip(μ(s)·0.02, ±0.2) with the dense reward −‖s' − g‖, computed here."""
    env = MetaEnv("PointCorners", reward_type="dense")
    policy = make_policy(2, (16,))
    params = jax.tree_util.tree_map(lambda x: 20.0 * x, init_params(policy, jax.random.PRNGKey(2), 2))
    goal = np.array([2.0, -2.0])
    try:
        episode = video.run_episode(env, policy, params, {"goal": goal}, horizon=10, seed=1, render=False)
    finally:
        env.close()
    s = episode.observations[0]
    for t in range(10):
        mean = np.asarray(policy.apply(params, jnp.asarray(s[None], jnp.float32)).mean[0], np.float64)
        np.testing.assert_allclose(episode.actions[t], mean, rtol=1e-4, atol=1e-5)
        s = s + np.clip(mean * 0.2 / 10.0, -0.2, 0.2)
        np.testing.assert_allclose(episode.observations[t + 1], s, atol=1e-5)
        np.testing.assert_allclose(episode.rewards[t], -np.linalg.norm(s - goal), atol=1e-5)
    assert np.abs(episode.actions).max() > 10  # the clip is exercised


def test_task_labels_and_text_on_frames():
    assert video.task_label({"goal": np.array([2.0, -2.0])}) == "goal (2, -2)"
    assert video.task_label({"direction": np.array(-1.0)}) == "direction -1"
    label = video.task_label({"body_mass": np.array([0.5, 2.0, 1.25, 3.0, 1.0]), "velocity": np.array(1.5)})
    assert label == "body_mass 5 values in [0.5, 3]; velocity 1.5"
    frame = np.full((48, 64, 3), 235, np.uint8)
    text = video.annotate(frame, ["step 1", "return 2.00"])
    assert text.shape == frame.shape and text.dtype == np.uint8
    assert (text[:20, :40] != 235).any() and (text[-10:, -10:] == 235).all()
    assert (video.annotate(frame, ["step 1"]) != video.annotate(frame, ["step 2"])).any()


def test_video_extra_and_test_extra_install_the_mp4_writer(tmp_path):
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]

    def names(reqs):
        return {re.split(r"[<>=\[ ]", req, maxsplit=1)[0].lower() for req in reqs}

    assert {"imageio", "imageio-ffmpeg", "moviepy"} <= names(extras["video"])
    assert {"imageio", "imageio-ffmpeg"} <= names(extras["test"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing noisy when the writer starts ffmpeg
        n = video.write_mp4(tmp_path / "check.mp4",
                            (np.full((32, 48, 3), c, np.uint8) for c in (0, 128, 255)), fps=10)
    assert n == 3
    frames = read_frames(tmp_path / "check.mp4")
    assert frames.shape == (3, 32, 48, 3)
    np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), [0, 128, 255], atol=3)
