"""The algorithms: one recipe module per algorithm family, each registering itself in
:data:`ALGORITHMS` (docs/architecture.md, "Add an algorithm"). Every module of this package is
imported here, so a new recipe file is picked up without further edits.

* :mod:`~adaptrl.algorithms.promp` — ProMP
* :mod:`~adaptrl.algorithms.maml` — MAML-TRPO, MAML-VPG
* :mod:`~adaptrl.algorithms.emaml` — E-MAML-TRPO, E-MAML-VPG
* :mod:`~adaptrl.algorithms.lvc` — LVC-TRPO, LVC-VPG
* :mod:`~adaptrl.algorithms.dice` — DiCE-VPG
* :mod:`~adaptrl.algorithms.tmaml` — TMAML (meta and per-task control variates)

All of them are compositions of :class:`~adaptrl.algorithms.meta_rl.MetaRL`.
"""

import importlib
import pkgutil

from adaptrl.algorithms.base import ALGORITHMS, Algorithm, AlgorithmSpec, IterationOutput

_LISTED_FIRST = ("promp", "maml", "emaml", "lvc", "dice", "tmaml")  # the order of `adaptrl train --help`
for _module in (*_LISTED_FIRST, *sorted(m.name for m in pkgutil.iter_modules(__path__))):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["ALGORITHMS", "Algorithm", "AlgorithmSpec", "IterationOutput"]
