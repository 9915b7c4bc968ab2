"""Device choice (cuda > mps > cpu, overridable) and seeded torch generators (the kit passes
generators explicitly rather than seeding the global ones)."""

from __future__ import annotations

import os

import torch

__all__ = ["get_device", "make_generator"]


def get_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: ``device`` if given, else ``$REINDIR_DEVICE``, else cuda > mps > cpu."""
    if device is None:
        device = os.environ.get("REINDIR_DEVICE") or None
    if device is not None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but CUDA is not available here")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(int(seed))
    return gen
