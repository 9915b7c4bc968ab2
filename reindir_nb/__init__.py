"""reindir_nb: notebook-first research kit for INR deformable registration (IDIR/ccIDIR,
Reptile, REINDIR). ``import reindir_nb as rn``; the layers are described in docs/architecture.md.

Subpackages, each importing only those above it in this list: ``core``, ``data``,
``simulation``, ``inr``, ``meta``, ``evaluation``, ``viz``; then ``pipeline`` and ``cli``.
The short names of DESIGN.md's public API (``rn.io``, ``rn.phantom``, ``rn.evaluate``,
``rn.figures``, ``rn.widgets`` ...) are kept as aliases of the modules that now hold them.
"""

from __future__ import annotations

import importlib
from typing import Any

from .core.geometry import Grid
from .core.pair import Pair
from .core.profiles import Profile, get_profile
from .core.volume import Volume
from .inr.registration import RegisterSettings, RegistrationRun, register
from . import simulation  # noqa: F401  (registers the phantom: and bundled:thorax-ct data sources)

__version__ = "0.1.0"

# short public name -> module that holds it (imported on first use: keeps ``import reindir_nb`` fast)
_MODULES = {
    "core": "core", "data": "data", "simulation": "simulation", "inr": "inr", "meta": "meta",
    "evaluation": "evaluation", "viz": "viz", "pipeline": "pipeline", "cli": "cli",
    "geometry": "core.geometry", "volume": "core.volume", "pair": "core.pair", "device": "core.device",
    "profiles": "core.profiles", "files": "core.files",
    "io": "data.io", "datasets": "data.datasets", "preprocess": "data.preprocess", "prealign": "data.prealign",
    "phantom": "simulation.phantom", "motion": "simulation.motion", "bundled": "simulation.bundled",
    "landmarks": "simulation.landmarks",
    "derivatives": "inr.derivatives", "losses": "inr.losses", "objective": "inr.objective",
    "registration": "inr.registration", "export": "inr.export",
    "encoder": "meta.encoder", "infusion": "meta.infusion", "training": "meta.training", "recipes": "meta.recipes",
    "evaluate": "evaluation", "voxelmorph": "evaluation.voxelmorph",
    "figures": "viz.figures", "widgets": "viz.widgets", "explorers": "viz.explorers",
}
# public functions re-exported lazily (module, attribute)
_FUNCTIONS = {
    "load_pair": ("data.datasets", "load_pair"),
    "load_cohort": ("data.datasets", "load_cohort"),
    "prepare": ("data.preprocess", "prepare"),
    "get_device": ("core.device", "get_device"),
    "Workspace": ("evaluation.workspace", "Workspace"),
}

__all__ = ["Grid", "Pair", "Profile", "Volume", "get_profile", "register", "RegisterSettings", "RegistrationRun", *_FUNCTIONS,
           *sorted(_MODULES)]


def __getattr__(name: str) -> Any:
    """Import modules and entry points on first use."""
    if name in _MODULES:
        return importlib.import_module(f".{_MODULES[name]}", __name__)
    if name in _FUNCTIONS:
        module, attr = _FUNCTIONS[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'reindir_nb' has no attribute {name!r}")
