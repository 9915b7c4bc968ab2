"""Meta-learned starts as files: the Reptile template (both INRs) and the REINDIR model
(encoder + infusion heads + templates), each an ``Initialiser`` for :func:`reindir_nb.register`.

``model.save(path)`` writes plain tensors, numbers, strings, lists and dicts; :func:`load` reads
them with ``torch.load(weights_only=True)`` (no code runs on load) and refuses other versions,
NaN weights and architectures that do not match what the file states.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ..core.files import atomic_path
from ..inr.network import Params, SirenConfig
from ..inr.objective import Problem
from .encoder import ENCODER_INPUTS, Encoder, encoder_channels
from .infusion import InfusionHeads

__all__ = ["ReptileTemplate", "ReindirModel", "load", "save_atomic", "read_state", "model_from_state",
           "FORMAT_VERSION"]

# version of the files written by ``.save`` and training checkpoints (plain tensors, numbers,
# strings, lists and dicts: read with ``torch.load(weights_only=True)``)
FORMAT_VERSION = 2

def save_atomic(obj, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path



@dataclass
class ReptileTemplate:
    """Learned initialisation of both INRs (an ``Initialiser`` for :func:`reindir_nb.register`)."""

    forward: Params
    backward: Params
    siren_config: SirenConfig = SirenConfig()
    info: dict = field(default_factory=dict)
    encoder_seconds: float = 0.0

    def initial_params(self, problem: Problem) -> tuple[Params, Params]:
        dev = problem.device
        return [p.to(dev) for p in self.forward], [p.to(dev) for p in self.backward]

    def state(self) -> dict:
        return {"kind": "reptile", "format_version": FORMAT_VERSION, "forward": [p.detach().cpu() for p in self.forward],
                "backward": [p.detach().cpu() for p in self.backward],
                "siren_config": vars(self.siren_config), "info": self.info}

    def save(self, path: str | Path) -> Path:
        return save_atomic(self.state(), path)


class ReindirModel(nn.Module):
    """Encoder + infusion heads + template INRs (an ``Initialiser`` for :func:`reindir_nb.register`).

    ``initial_params(problem)`` embeds the pair (its prepared fixed and moving patches) and
    returns the infused forward/backward params; ``encoder_seconds`` is the time it took.
    """

    def __init__(self, template: ReptileTemplate, patch_size: tuple[int, int, int], width: int = 6,
                 embedding_length: int = 1025, info: dict | None = None, encoder_input: str = "pair"):
        super().__init__()
        if encoder_input not in ENCODER_INPUTS:
            raise ValueError(f"encoder_input must be one of {sorted(ENCODER_INPUTS)}, got {encoder_input!r}")
        self.template = template
        self.siren_config = template.siren_config
        self.encoder_input = encoder_input
        self.encoder = Encoder(patch_size, width, embedding_length, ENCODER_INPUTS[encoder_input])
        self.heads = InfusionHeads(embedding_length, template.siren_config.hidden)
        self.info = dict(info or {})
        self.encoder_seconds = 0.0

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def patches(self, problem: Problem) -> Tensor:
        """``(1, C, D, H, W)``: the encoder input (:data:`ENCODER_INPUTS`) on its patch size."""
        fixed, moving = problem.encoder_images  # the coarse view of a fine view
        size = self.encoder.patch_size
        if tuple(fixed.shape[2:]) != size:
            fixed = nn.functional.interpolate(fixed, size=size, mode="trilinear", align_corners=True)
        if tuple(moving.shape[2:]) != size:
            moving = nn.functional.interpolate(moving, size=size, mode="trilinear", align_corners=True)
        return encoder_channels(fixed, moving, self.encoder_input).to(self.device)

    def embed(self, problem: Problem) -> Tensor:
        return self.encoder(self.patches(problem))[0]

    def infused(self, embedding: Tensor, forward: Params, backward: Params) -> tuple[Params, Params]:
        return self.heads.infuse(embedding, forward, backward)

    @torch.no_grad()
    def initial_params(self, problem: Problem) -> tuple[Params, Params]:
        t0 = time.perf_counter()
        self.to(problem.device)
        fwd, bwd = self.template.initial_params(problem)
        out = self.infused(self.embed(problem), fwd, bwd)
        if problem.device.type == "cuda":
            torch.cuda.synchronize()
        self.encoder_seconds = time.perf_counter() - t0
        return out

    def state(self) -> dict:
        return {"kind": "reindir", "format_version": FORMAT_VERSION, "template": self.template.state(),
                "patch_size": list(self.encoder.patch_size),
                "width": self.encoder.width, "embedding_length": self.encoder.embedding_length,
                "encoder_input": self.encoder_input,
                "encoder": {k: v.cpu() for k, v in self.encoder.state_dict().items()},
                "heads": {k: v.cpu() for k, v in self.heads.state_dict().items()}, "info": self.info}

    def save(self, path: str | Path) -> Path:
        return save_atomic(self.state(), path)


def _check_finite(tensors, what: str) -> None:
    for i, t in enumerate(tensors):
        if not torch.isfinite(t).all():
            raise ValueError(f"{what}: tensor {i} holds NaN or infinite values")


def _template_from_state(state: dict, where: str = "model") -> ReptileTemplate:
    _check_finite(state["forward"] + state["backward"], f"{where}: template")
    return ReptileTemplate(list(state["forward"]), list(state["backward"]), SirenConfig(**state["siren_config"]),
                           state.get("info", {}))


def model_from_state(state: dict, where: str = "model") -> "ReptileTemplate | ReindirModel":
    """The model a ``.state()`` dict describes (``where`` names it in errors)."""
    if state["kind"] == "reptile":
        return _template_from_state(state, where)
    if state.get("output_shift"):  # written while the retired output-shift heads existed (2026-12)
        raise ValueError(f"{where}: a REINDIR model with output-shift heads, an experiment this kit no longer "
                         "has; retrain it")
    if state.get("encoder_input", "pair") not in ENCODER_INPUTS:
        raise ValueError(f"{where}: encoder input {state.get('encoder_input')!r} is not one of "
                         f"{sorted(ENCODER_INPUTS)} (retired experiment); retrain it")
    model = ReindirModel(_template_from_state(state["template"], where), tuple(state["patch_size"]), state["width"],
                         state["embedding_length"], state.get("info"), state.get("encoder_input", "pair"))
    _check_finite(list(state["encoder"].values()) + list(state["heads"].values()), f"{where}: encoder/heads")
    try:
        model.encoder.load_state_dict(state["encoder"])
        model.heads.load_state_dict(state["heads"])
    except RuntimeError as err:  # shapes that do not match the stated architecture
        raise ValueError(f"{where}: encoder/heads do not match width {state['width']}, embedding length "
                         f"{state['embedding_length']}: "
                         f"{str(err).splitlines()[0]}") from None
    return model


def read_state(path: Path) -> dict:
    """A file written by the kit, read safely (``weights_only=True``: no code runs on load)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError for crafted files, RuntimeError for others
        raise ValueError(f"{path}: not a reindir_nb model or checkpoint that can be read safely "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a reindir_nb model (a {type(state).__name__})")
    return state


def load(path: str | Path, embedding_length: int | None = None) -> "ReptileTemplate | ReindirModel":
    """Read a model written by ``.save`` (or the model inside a training checkpoint). Files are
    read with ``weights_only=True``; other versions, NaN weights and (with ``embedding_length``)
    another embedding length are refused with an error naming the path."""
    path = Path(path)
    state = read_state(path)
    if "model" in state and "step" in state:  # a training checkpoint
        state = state["model"]
    if not isinstance(state, dict) or state.get("kind") not in ("reptile", "reindir"):
        raise ValueError(f"{path}: not a reindir_nb model (kind {state.get('kind') if isinstance(state, dict) else None!r})")
    if state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: written by another version of the kit (format {state.get('format_version')}, "
                         f"this kit reads {FORMAT_VERSION}); retrain or re-save it")
    if embedding_length is not None and state["kind"] == "reindir" and state["embedding_length"] != embedding_length:
        raise ValueError(f"{path}: embedding length {state['embedding_length']}, expected {embedding_length}")
    return model_from_state(state, str(path))
