"""MuJoCo's smooth kinematics (``mj_kinematics``, ``mj_comPos``, ``mj_comVel``) for a batch of
states, computed by MuJoCo itself without a Python loop over environments.

``mjData.cinert`` (body inertia in the c-frame, ``nbody × 10``), ``mjData.cvel`` (body velocity in
the c-frame, rotation first, ``nbody × 6``) and ``mjData.subtree_com`` are computed per ``MjData``.
:class:`BatchKinematics` replicates the model's kinematic tree (bodies, joints and inertials; no
geoms, sites or actuators) ``K`` times side by side under the world body, in a *block model*
(:func:`replicated_tree_xml`): copy ``k`` has its own ``qpos``/``qvel`` slice, its own trees and
hence its own c-frames, so one ``mj_kinematics`` + ``mj_comPos`` + ``mj_comVel`` pass on the
block computes ``K`` environments at once, in C, with the operations MuJoCo runs on the original
model (the constants are written with ``repr`` and read back exactly, so the results equal
MuJoCo's bit for bit in the tests). A batch of ``B`` states takes ``⌈B / K⌉`` passes (``K`` = 64
for the families here; see :data:`BLOCK_SIZES`), and Python never loops over single environments
(unless a tree has more than :data:`MAX_BLOCK_BODIES` bodies, when blocks hold one copy).

Definitions (MuJoCo documentation):

* ``subtree_com[i] = Σ_{j ∈ subtree(i)} m_j·xipos_j / Σ_{j ∈ subtree(i)} m_j``; the model's centre
  of mass is ``subtree_com[0]``, which for copy ``k`` is the mass-weighted mean of its trees'
  ``subtree_com`` (the world body has no mass).
* c-frame: at ``subtree_com`` of the body's tree root, oriented like the world
  (https://mujoco.readthedocs.io/en/stable/APIreference/APItypes.html#tynotescom). With
  ``d = xipos − subtree_com[root]``: ``cinert = [I_xx, I_yy, I_zz, I_xy, I_xz, I_yz, m·d, m]``,
  ``I = ximat·diag(body_inertia)·ximatᵀ + m(‖d‖²𝟙 − d dᵀ)``.
* ``cvel[i] = Σ_{dofs d of body i and its ancestors} cdof_d·qvel_d`` with the motion axes ``cdof``
  (``[a, a × (c − anchor)]`` for a hinge).

Fields: https://mujoco.readthedocs.io/en/stable/APIreference/APItypes.html#mjdata; functions:
https://mujoco.readthedocs.io/en/stable/APIreference/functions.html#mj-compos; the MJCF written
here: https://mujoco.readthedocs.io/en/stable/XMLreference.html (``body``, ``inertial``, ``joint``
with ``ref``, ``freejoint``).
"""

from __future__ import annotations

import functools

import numpy as np

from adaptrl.envs.rendering import import_mujoco

MINVAL = 1e-15  # mjMINVAL
# copies per block model: compiling grows faster than linearly with the model's size, so blocks
# stay near MAX_BLOCK_BODIES bodies; a batch's last block is the smallest size that holds it
BLOCK_SIZES = (1, 4, 16, 64)
MAX_BLOCK_BODIES = 1024
JOINT_TYPES = {0: "free", 1: "ball", 2: "slide", 3: "hinge"}  # mjtJoint → MJCF joint type


def _numbers(values) -> str:
    """Space-separated ``repr`` of floats: MJCF text that reads back to the same doubles."""
    return " ".join(repr(float(v)) for v in np.ravel(values))


def _body_xml(model, body: int, children: dict[int, list[int]]) -> str:
    """MJCF of ``body`` and its subtree as compiled in ``model``: frame relative to the parent,
    explicit inertial (when it has mass), joints in order (``ref`` = ``qpos0`` of hinges and
    slides, in radians)."""
    parts = [f'<body pos="{_numbers(model.body_pos[body])}" quat="{_numbers(model.body_quat[body])}">']
    if model.body_mass[body] > 0:
        parts.append(f'<inertial pos="{_numbers(model.body_ipos[body])}" '
                     f'quat="{_numbers(model.body_iquat[body])}" mass="{_numbers(model.body_mass[body])}" '
                     f'diaginertia="{_numbers(model.body_inertia[body])}"/>')
    first = model.body_jntadr[body]
    for j in range(first, first + model.body_jntnum[body]):
        kind = JOINT_TYPES[int(model.jnt_type[j])]
        if kind == "free":
            parts.append("<freejoint/>")
            continue
        ref = f' ref="{_numbers(model.qpos0[model.jnt_qposadr[j]])}"' if kind in ("hinge", "slide") else ""
        parts.append(f'<joint type="{kind}" axis="{_numbers(model.jnt_axis[j])}" '
                     f'pos="{_numbers(model.jnt_pos[j])}"{ref}/>')
    parts += [_body_xml(model, child, children) for child in children[body]]
    parts.append("</body>")
    return "".join(parts)


def replicated_tree_xml(model, copies: int) -> str:
    """MJCF of ``copies`` copies of ``model``'s kinematic tree under one world body, in MuJoCo's
    body order (copy ``k`` holds bodies ``1 + k·(nbody − 1)`` … and ``qpos``/``qvel`` slices
    ``k·nq`` …, ``k·nv`` …)."""
    children: dict[int, list[int]] = {i: [] for i in range(model.nbody)}
    for i in range(1, model.nbody):
        children[int(model.body_parentid[i])].append(i)
    tree = "".join(_body_xml(model, root, children) for root in children[0])
    return f'<mujoco><compiler angle="radian"/><worldbody>{tree * copies}</worldbody></mujoco>'


@functools.lru_cache(maxsize=32)
def _compile(xml: str):
    mujoco = import_mujoco()

    return mujoco.MjModel.from_xml_string(xml)


class _Block:
    """A block model with ``size`` copies, its ``MjData`` and views of the fields read and written:
    ``qpos``/``qvel`` ``[size·nq]``/``[size·nv]``, per copy ``cinert [size, nbody − 1, 10]``,
    ``cvel [size, nbody − 1, 6]`` and ``subtree_com [size, nbody − 1, 3]`` (world body left out)."""

    def __init__(self, model, size: int):
        mujoco = import_mujoco()

        self.size = size
        self.model = model if size == 1 else _compile(replicated_tree_xml(model, size))
        self.data = mujoco.MjData(self.model)
        per = model.nbody - 1
        self.qpos, self.qvel = self.data.qpos, self.data.qvel
        self.cinert = self.data.cinert[1:].reshape(size, per, 10)
        self.cvel = self.data.cvel[1:].reshape(size, per, 6)
        self.subtree_com = self.data.subtree_com[1:].reshape(size, per, 3)
        self.idle_qpos = np.tile(model.qpos0, size)
        self._passes = (mujoco.mj_kinematics, mujoco.mj_comPos, mujoco.mj_comVel)

    def run(self) -> None:
        """``mj_kinematics``, ``mj_comPos``, ``mj_comVel`` on the whole block."""
        for compute in self._passes:
            compute(self.model, self.data)


class BatchKinematics:
    """``cinert``, ``cvel`` and the centre of mass of a model for batches of states.

    ``kin(qpos [B, nq], qvel [B, nv])`` returns ``{"cinert": [B, nbody·10], "cvel": [B, nbody·6],
    "com": [B, 3]}``: what ``mj_kinematics``, ``mj_comPos`` and ``mj_comVel`` leave in
    ``mjData.cinert``, ``mjData.cvel`` and ``mjData.subtree_com[0]`` for each state. Block models
    (:func:`replicated_tree_xml`) are compiled on first use and shared between instances; each
    instance has its own ``MjData``.
    """

    def __init__(self, model):
        if np.any(np.asarray(model.body_mocapid) >= 0):
            raise NotImplementedError("batched kinematics: mocap bodies are not supported")
        self.model = model
        self.nq, self.nv, self.nbody = model.nq, model.nv, model.nbody
        largest = max(1, MAX_BLOCK_BODIES // max(1, self.nbody - 1))
        self.sizes = tuple(s for s in BLOCK_SIZES if s <= largest) or (1,)
        self.roots = np.flatnonzero(np.asarray(model.body_parentid) == 0)[1:] - 1  # trees, per copy
        mass, tree_of = np.asarray(model.body_mass, float), np.asarray(model.body_rootid)
        self.tree_mass = np.array([mass[tree_of == r + 1].sum() for r in self.roots])
        # block size for a (last) block of k states: the smallest size >= k
        self._size_for = [next(s for s in self.sizes if s >= k) for k in range(self.sizes[-1] + 1)]
        self._blocks: dict[int, _Block] = {}

    def _block(self, size: int) -> _Block:
        if size not in self._blocks:
            self._blocks[size] = _Block(self.model, size)
        return self._blocks[size]

    def __call__(self, qpos: np.ndarray, qvel: np.ndarray) -> dict[str, np.ndarray]:
        n = qpos.shape[0]
        cinert = np.zeros((n, self.nbody, 10))  # row 0 (the world body) stays zero, as in MuJoCo
        cvel = np.zeros((n, self.nbody, 6))
        com = np.empty((n, 3))
        step = self.sizes[-1]
        for start in range(0, n, step):  # blocks of up to `step` environments, one batched pass each
            stop = min(n, start + step)
            block = self._block(self._size_for[stop - start])
            self._run_block(block, qpos[start:stop], qvel[start:stop])
            k = stop - start
            cinert[start:stop, 1:] = block.cinert[:k]
            cvel[start:stop, 1:] = block.cvel[:k]
            com[start:stop] = whole_model_com(block.subtree_com[:k], self.roots, self.tree_mass)
        return {"cinert": cinert.reshape(n, -1), "cvel": cvel.reshape(n, -1), "com": com}

    def _run_block(self, block: _Block, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Load ``k ≤ size`` states into ``block`` (unused copies at ``qpos0``, at rest) and run it."""
        k, nq, nv = qpos.shape[0], self.nq, self.nv
        block.qpos[: k * nq] = qpos.ravel()
        block.qvel[: k * nv] = qvel.ravel()
        if k < block.size:
            block.qpos[k * nq :] = block.idle_qpos[k * nq :]
            block.qvel[k * nv :] = 0.0
        block.run()


def whole_model_com(subtree_com: np.ndarray, roots: np.ndarray, tree_mass: np.ndarray) -> np.ndarray:
    """``subtree_com[0]`` ``[k, 3]`` from each copy's ``subtree_com`` ``[k, nbody − 1, 3]`` (world
    left out) and its trees (root rows ``roots``, masses ``M_t``): ``Σ_t M_t·c_t / Σ_t M_t`` (one
    tree with mass: ``c_0`` itself; no mass: the origin, MuJoCo's ``xipos`` of the world)."""
    if roots.size == 1 and tree_mass[0] >= MINVAL:
        return subtree_com[:, roots[0]]
    total = tree_mass.sum()
    if total < MINVAL:
        return np.zeros((subtree_com.shape[0], 3))
    return np.einsum("t,kti->ki", tree_mass, subtree_com[:, roots]) / total
