"""MuJoCo rendering for the Gymnasium envs: the OpenGL backend is chosen and loaded on the first
``render()`` only, a failure is reported once as one clear error, and goal markers are drawn.

MuJoCo picks its OpenGL backend from ``MUJOCO_GL`` when ``mujoco.rendering.classic.gl_context`` is
first imported, and ``import mujoco`` imports it. With ``MUJOCO_GL=osmesa`` and no libOSMesa that
import itself fails (PyOpenGL raises ``AttributeError``), so building an env would fail although it
never renders. :func:`import_mujoco` therefore imports MuJoCo with the backend held back; the
backend is loaded by :func:`make_renderer`, on the first render:

* ``MUJOCO_GL`` set: that backend (``egl``, ``osmesa``, ``glfw``/``glx``), MuJoCo's own rule.
* ``MUJOCO_GL`` unset and a display (``DISPLAY`` or ``WAYLAND_DISPLAY``): glfw, MuJoCo's default.
* ``MUJOCO_GL`` unset and no display (Linux): egl, since glfw needs a display. Only when MuJoCo was
  first imported through this module and PyOpenGL is not loaded yet (otherwise MuJoCo's own choice,
  glfw, stands). ``MUJOCO_GL`` itself is left unset.

If the context cannot be made, the error is kept and raised again by every later attempt in the
process, without calling MuJoCo's GL initialisation again: a second attempt after a failed
``mjr_makeContext`` aborts the interpreter (``libc++abi … recursive initialization``).
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import threading
from typing import Any

import numpy as np

from adaptrl.errors import ConfigError

_DISABLED = ("disable", "disabled", "off", "false", "0")
_LOCK = threading.RLock()
_state: dict[str, Any] = {"deferred": False, "loaded": False, "backend": None, "error": None}

GOAL_RGBA = np.array([0.1, 0.8, 0.1, 0.9], np.float32)


def import_mujoco():
    """``import mujoco`` without loading its OpenGL backend (see the module docstring)."""
    if "mujoco" in sys.modules:
        return sys.modules["mujoco"]
    with _LOCK:
        if "mujoco" in sys.modules:
            return sys.modules["mujoco"]
        saved = os.environ.get("MUJOCO_GL")
        os.environ["MUJOCO_GL"] = "disable"
        try:
            import mujoco
        finally:
            if saved is None:
                os.environ.pop("MUJOCO_GL", None)
            else:
                os.environ["MUJOCO_GL"] = saved
        try:
            from mujoco.rendering.classic import gl_context
        except ImportError:  # another MuJoCo layout: its own backend choice stands
            return mujoco

        if not hasattr(gl_context, "GLContext") and (saved or "").lower().strip() not in _DISABLED:
            _state["deferred"] = True
            # Code that uses mujoco.GLContext / mujoco.Renderer directly loads the backend on first use.
            gl_context.GLContext = mujoco.GLContext = _LazyGLContext
        return mujoco


class _LazyGLContext:
    """Stands in for ``mujoco.GLContext`` until the backend is loaded; builds the real one."""

    def __new__(cls, *args, **kwargs):
        return _load_backend()(*args, **kwargs)


def _display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def gl_backend() -> str:
    """The backend MuJoCo uses (or will use on the first render), as words for messages."""
    if _state["backend"]:
        return _state["backend"]
    value = os.environ.get("MUJOCO_GL", "").strip()
    if value:
        return f"MUJOCO_GL={value}"
    if (_state["deferred"] and platform.system() == "Linux" and not _display()
            and "OpenGL" not in sys.modules and not os.environ.get("PYOPENGL_PLATFORM")):
        return "egl (MUJOCO_GL unset and no display)"
    return "glfw (MuJoCo's default, MUJOCO_GL unset; needs a display)"


def gl_error_message(backend: str, exc: BaseException | str) -> str:
    """The one message for every way the OpenGL context can fail."""
    return (
        f"MuJoCo could not open an OpenGL context with backend {backend}: {exc}. Set MUJOCO_GL "
        "before starting Python: MUJOCO_GL=egl (headless, needs libEGL; works on CPU-only machines "
        "through Mesa's software EGL) or MUJOCO_GL=osmesa (software, needs libOSMesa, e.g. "
        "`apt install libosmesa6`); the default, glfw, needs a display. See docs/environments.md, "
        "Rendering."
    )


def _fail(exc: BaseException | str, backend: str | None = None) -> ConfigError:
    error = ConfigError(gl_error_message(backend or gl_backend(), exc))
    _state["error"] = error
    return error


def _load_backend():
    """Load the OpenGL backend held back by :func:`import_mujoco`; return ``GLContext``."""
    with _LOCK:
        if _state["error"] is not None:
            raise _state["error"]
        mujoco = import_mujoco()
        from mujoco.rendering.classic import gl_context

        if not _state["deferred"] or _state["loaded"]:
            return getattr(gl_context, "GLContext", None)
        backend = gl_backend()
        auto_egl = backend.startswith("egl")
        if auto_egl:
            os.environ["MUJOCO_GL"] = "egl"
        try:
            importlib.reload(gl_context)
        except Exception as exc:  # e.g. AttributeError from PyOpenGL when libOSMesa is missing
            raise _fail(f"{type(exc).__name__}: {exc}", backend) from None
        finally:
            if auto_egl:
                os.environ.pop("MUJOCO_GL", None)
        _state.update(loaded=True, backend=backend)
        mujoco.GLContext = gl_context.GLContext
        return gl_context.GLContext


def make_renderer(model, height: int, width: int):
    """A ``mujoco.Renderer``, or the one clear error (raised again, from memory, on later calls)."""
    mujoco = import_mujoco()
    if width > model.vis.global_.offwidth or height > model.vis.global_.offheight:
        raise ConfigError(
            f"render size {width}x{height} exceeds the model's offscreen framebuffer "
            f"{model.vis.global_.offwidth}x{model.vis.global_.offheight}; pass a smaller width/height."
        )
    with _LOCK:
        if _state["error"] is not None:  # never touch MuJoCo's GL initialisation twice
            raise _state["error"]
        _load_backend()
        try:
            return mujoco.Renderer(model, height, width)
        except Exception as exc:
            raise _fail(exc) from None


def add_goal_marker(scene, goal, radius: float = 0.25, rgba: np.ndarray = GOAL_RGBA) -> None:
    """Append a flat disc at ``goal`` (x, y[, z]) to an updated ``mujoco.MjvScene``: drawn only,
    the physics is unchanged. Call after ``Renderer.update_scene``."""
    import mujoco

    if scene.ngeom >= scene.maxgeom:
        return
    goal = np.asarray(goal, np.float64).ravel()
    pos = np.zeros(3)
    pos[: min(goal.size, 3)] = goal[:3]
    mujoco.mjv_initGeom(
        scene.geoms[scene.ngeom], mujoco.mjtGeom.mjGEOM_CYLINDER,
        np.array([radius, 0.02, 0.0]), pos + np.array([0.0, 0.0, 0.02]),
        np.eye(3).ravel(), np.asarray(rgba, np.float32),
    )
    scene.ngeom += 1
