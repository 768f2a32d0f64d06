"""MuJoCo rendering of the Gymnasium envs (docs/environments.md, Rendering): env construction does not
load OpenGL, a failed OpenGL context gives one clear error that is raised again without touching
MuJoCo's GL initialisation (a second ``mjr_makeContext`` after a failure aborts Python), the
message names the backend tried and the fixes, and goal tasks draw a goal marker.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap

import mujoco
import numpy as np
import pytest

from adaptrl.envs import rendering
from adaptrl.envs.rendering import add_goal_marker, gl_error_message
from adaptrl.errors import ConfigError


def _loadable(*names: str) -> bool:
    for name in names:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            pass
    return False


HAVE_EGL = _loadable("libEGL.so.1", "libEGL.so")
HAVE_OSMESA = _loadable("libOSMesa.so.8", "libOSMesa.so.6", "libOSMesa.so")


def _run(code: str, **env_changes: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=240)


RENDER_TWICE = """
    import gymnasium, numpy as np
    import adaptrl
    env = gymnasium.make("adaptrl/AntRandGoal-v0", render_mode="rgb_array")
    env.reset(seed=0)
    env.step(env.action_space.sample())
    print("MADE")
    for attempt in range(2):
        try:
            print("FRAME", env.render().shape)
        except adaptrl.errors.ConfigError as exc:
            print("ERROR", exc)
"""


@pytest.fixture
def fresh_gl_state(monkeypatch):
    """No kept GL error, and the backend counted as loaded, so nothing here loads a real backend;
    the module's state is restored afterwards."""
    monkeypatch.setitem(rendering._state, "error", None)
    monkeypatch.setattr(rendering, "_load_backend", lambda: None)


def test_second_render_after_gl_failure_raises_kept_error(gym_env, fresh_gl_state, monkeypatch):
    """The first failure is kept: a second render (and another env's render) raises the same clear
    error and does not call MuJoCo's renderer (GL) constructor again."""
    calls = []

    def failing_renderer(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("an OpenGL platform library has not been loaded into this process")

    monkeypatch.setattr(mujoco, "Renderer", failing_renderer)
    env = gym_env("AntRandGoal", render_mode="rgb_array")
    env.reset(seed=0)
    with pytest.raises(ConfigError) as first:
        env.render()
    with pytest.raises(ConfigError) as second:
        env.render()
    other = gym_env("AntRandGoal", render_mode="rgb_array")
    other.reset(seed=0)
    with pytest.raises(ConfigError) as third:
        other.render()
    assert len(calls) == 1
    assert str(first.value) == str(second.value) == str(third.value)
    assert "an OpenGL platform library has not been loaded" in str(first.value)
    assert "MUJOCO_GL=egl" in str(first.value)


def test_error_message_names_backend_and_fixes():
    message = gl_error_message("MUJOCO_GL=osmesa", "libOSMesa not found")
    assert "backend MUJOCO_GL=osmesa" in message and "libOSMesa not found" in message
    assert "MUJOCO_GL=egl" in message and "CPU-only" in message  # not "GPU only"
    assert "MUJOCO_GL=osmesa" in message and "libosmesa6" in message
    assert "glfw" in message and "display" in message


def test_backend_named_in_error(monkeypatch):
    monkeypatch.setitem(rendering._state, "backend", None)
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert rendering.gl_backend() == "MUJOCO_GL=osmesa"
    monkeypatch.delenv("MUJOCO_GL")
    monkeypatch.setenv("DISPLAY", ":0")
    assert rendering.gl_backend().startswith("glfw")


def test_render_size_beyond_framebuffer_is_a_clear_error_not_a_gl_failure(gym_env, fresh_gl_state):
    env = gym_env("AntRandGoal", render_mode="rgb_array", width=10_000, height=10)
    env.reset(seed=0)
    with pytest.raises(ConfigError, match="framebuffer"):
        env.render()
    assert rendering._state["error"] is None


def test_gym_make_with_osmesa_but_no_libosmesa():
    """MUJOCO_GL=osmesa without libOSMesa: gym.make, reset and step work (OpenGL is loaded on the first
    render only); render raises the clear error twice, and the process exits normally."""
    result = _run(RENDER_TWICE, MUJOCO_GL="osmesa")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MADE" in result.stdout
    if HAVE_OSMESA:  # libOSMesa installed: rendering works, nothing more to check
        assert result.stdout.count("FRAME (240, 320, 3)") == 2, result.stdout
        return
    errors = [line for line in result.stdout.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 2 and errors[0] == errors[1]
    assert "backend MUJOCO_GL=osmesa" in errors[0] and "libosmesa6" in errors[0]
    assert "MUJOCO_GL=egl" in errors[0]


def test_default_glfw_without_display_fails_twice_without_abort():
    """MuJoCo's default backend (glfw) with an unreachable display: the second render used to abort
    Python (libc++abi recursive initialization, exit 134); now both raise the clear error."""
    result = _run(RENDER_TWICE, MUJOCO_GL=None, DISPLAY=":987", WAYLAND_DISPLAY=None)
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    errors = [line for line in result.stdout.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 2 and errors[0] == errors[1], result.stdout
    assert "backend glfw" in errors[0] and "MUJOCO_GL=egl" in errors[0]


@pytest.mark.skipif(not HAVE_EGL, reason="libEGL is not loadable on this machine (needed by MUJOCO_GL=egl)")
@pytest.mark.parametrize("env_changes", [{"MUJOCO_GL": "egl"},
                                         {"MUJOCO_GL": None, "DISPLAY": None, "WAYLAND_DISPLAY": None}],
                         ids=["MUJOCO_GL=egl", "unset-no-display"])
def test_egl_renders_goal_marker(env_changes):
    """With EGL (set, or picked because MUJOCO_GL is unset and there is no display), AntRandGoal renders
    and the frame changes where the goal is drawn when only the goal changes."""
    code = """
        import gymnasium, numpy as np
        import adaptrl
        env = gymnasium.make("adaptrl/AntRandGoal-v0", render_mode="rgb_array", width=64, height=48)
        frames = []
        for goal in ([1.0, 0.5], [-2.0, 1.5]):
            env.reset(seed=0, options={"task": {"goal": np.array(goal)}})
            frames.append(env.render())
        print("SHAPE", frames[0].shape, "DIFF", int((frames[0] != frames[1]).any(axis=2).sum()))
    """
    result = _run(code, **env_changes)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("SHAPE"))
    assert "(48, 64, 3)" in line and int(line.split()[-1]) > 0


def _goal_model():
    return mujoco.MjModel.from_xml_string('<mujoco><worldbody><geom size=".1"/></worldbody></mujoco>')


def test_add_goal_marker_puts_a_geom_at_the_goal():
    model = _goal_model()
    data = mujoco.MjData(model)
    scene = mujoco.MjvScene(model, maxgeom=10)
    mujoco.mjv_updateScene(model, data, mujoco.MjvOption(), None, mujoco.MjvCamera(),
                           mujoco.mjtCatBit.mjCAT_ALL, scene)
    before = scene.ngeom
    add_goal_marker(scene, np.array([1.5, -2.0]))
    assert scene.ngeom == before + 1
    np.testing.assert_allclose(scene.geoms[before].pos[:2], [1.5, -2.0])


class _SceneOnlyRenderer:
    """Stands in for mujoco.Renderer without OpenGL: a real MjvScene, a blank frame."""

    def __init__(self, model, height, width):
        self.model, self.shape = model, (height, width, 3)
        self.scene = mujoco.MjvScene(model, maxgeom=1000)

    def update_scene(self, data):
        mujoco.mjv_updateScene(self.model, data, mujoco.MjvOption(), None, mujoco.MjvCamera(),
                               mujoco.mjtCatBit.mjCAT_ALL, self.scene)

    def render(self):
        return np.zeros(self.shape, np.uint8)

    def close(self):
        pass


def test_ant_rand_goal_frame_has_goal_marker(gym_env, monkeypatch):
    """AntRandGoal's rendered scene holds a marker at the task's goal xy; physics is unchanged."""
    monkeypatch.setattr("adaptrl.envs.gym_env.make_renderer", _SceneOnlyRenderer)
    env = gym_env("AntRandGoal", render_mode="rgb_array")
    for goal in ([1.0, 0.5], [-2.0, 1.5]):
        obs, _ = env.reset(seed=0, options={"task": {"goal": np.array(goal)}})
        env.render()
        scene = env.unwrapped._renderer.scene
        marker = scene.geoms[scene.ngeom - 1]
        np.testing.assert_allclose(marker.pos[:2], goal)
        assert marker.type == mujoco.mjtGeom.mjGEOM_CYLINDER


def test_video_extra_installs_what_record_video_needs():
    """Gymnasium's RecordVideo imports MoviePy; imageio is in the extra only because adaptrl imports
    it (``adaptrl video``, tests/test_video.py checks that extra's writer)."""
    import pathlib
    import tomllib

    root = pathlib.Path(__file__).resolve().parents[1]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = [req.split(">")[0].split("=")[0].split("[")[0].strip().lower() for req in extras["video"]]
    assert "moviepy" in names
    source = "\n".join(p.read_text() for p in (root / "src" / "adaptrl").rglob("*.py"))
    if "import imageio" not in source:
        assert not any(name.startswith("imageio") for name in names)
