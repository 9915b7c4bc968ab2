"""reindir_nb: notebook-first research kit for INR deformable registration (IDIR/ccIDIR,
Reptile, REINDIR). ``import reindir_nb as rn``; see DESIGN.md for the public API."""

from __future__ import annotations

import importlib
from typing import Any

from .geometry import Grid
from .pair import Pair
from .profiles import Profile, get_profile
from .volume import Volume
# eager: the function ``rn.register`` shares its name with its module, and importing the module
# later would otherwise rebind ``rn.register`` to the module
from .register import RegistrationRun, register

__version__ = "0.1.0"

_SUBMODULES = {
    "geometry", "volume", "pair", "profiles", "device", "io", "datasets", "phantom", "preprocess",
    "inr", "derivatives", "losses", "objective", "prealign", "export", "encoder",
    "infusion", "meta", "evaluate", "figures", "widgets", "bundled", "landmarks", "voxelmorph", "motion", "pipeline",
}
# public functions re-exported lazily (module, attribute)
_FUNCTIONS = {
    "load_pair": ("datasets", "load_pair"),
    "load_cohort": ("datasets", "load_cohort"),
    "prepare": ("preprocess", "prepare"),
    "get_device": ("device", "get_device"),
}

__all__ = ["Grid", "Pair", "Profile", "Volume", "get_profile", "register", "RegistrationRun", *_FUNCTIONS, *sorted(_SUBMODULES)]


def __getattr__(name: str) -> Any:
    """Import submodules and heavy entry points on first use (keeps ``import reindir_nb`` fast)."""
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _FUNCTIONS:
        module, attr = _FUNCTIONS[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'reindir_nb' has no attribute {name!r}")
