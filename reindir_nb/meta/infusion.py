"""Repeated embedding infusion: modulate the template SIRENs' hidden->hidden layers.

For each INR (forward, backward) and each modulated layer l (``inr.MODULATED_LAYERS``), linear
heads map the embedding e (length E) to ``gamma_l`` (length E) and ``delta_l`` (256).
``gamma_l`` is repeated (tiled) and truncated to fill the 256x256 weight shape row by row (with
E = 1025 each row is a shifted copy), giving ``Gamma_l``; then ``W_l <- W_l * (1 + Gamma_l)`` and
``b_l <- b_l + delta_l``. Heads start at zero, so an untrained model equals its template exactly.

The heads read ``e / sqrt(E)``: with the encoder's signal-preserving initialisation the embedding
entries are O(1), and an Adam step on an (E x E) head would otherwise change ``gamma`` by
``lr * sum_j |e_j|`` ~ ``lr * E * mean|e|`` per step (estimated ~0.1 at lr 3e-4, E = 1025: a jump
of ~10 % in every modulated weight). With ``e / sqrt(E)`` the same lr moves ``gamma`` sqrt(E)
times less (note for ``paper``: its lr 1e-5 was chosen for raw embeddings).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from ..inr.network import MODULATED_LAYERS, Params

__all__ = ["repeat_to_matrix", "modulate", "InfusionHeads"]


def repeat_to_matrix(gamma: Tensor, shape: tuple[int, int]) -> Tensor:
    """Tile a vector (E,) and truncate it to fill ``shape`` in row-major order."""
    n = shape[0] * shape[1]
    reps = -(-n // gamma.shape[-1])
    return gamma.repeat(reps)[:n].view(shape)


def modulate(template: Params, gammas: dict[int, Tensor], deltas: dict[int, Tensor]) -> Params:
    """Infused params: layers in ``gammas`` get ``W * (1 + repeat(gamma))`` and ``b + delta``."""
    out = list(template)
    for layer_index, gamma in gammas.items():
        w, b = template[2 * layer_index], template[2 * layer_index + 1]
        out[2 * layer_index] = w * (1.0 + repeat_to_matrix(gamma, tuple(w.shape)))
        out[2 * layer_index + 1] = b + deltas[layer_index]
    return out


class InfusionHeads(nn.Module):
    """Zero-initialised linear heads embedding -> (gamma_l, delta_l) for both INRs."""

    def __init__(self, embedding_length: int, hidden: int = 256, layers: tuple[int, ...] = MODULATED_LAYERS):
        super().__init__()
        self.layers = tuple(layers)
        self.gamma = nn.ModuleDict()
        self.delta = nn.ModuleDict()
        for net in ("forward", "backward"):
            for l in self.layers:
                self.gamma[f"{net}{l}"] = nn.Linear(embedding_length, embedding_length)
                self.delta[f"{net}{l}"] = nn.Linear(embedding_length, hidden)
        for p in self.parameters():
            nn.init.zeros_(p)

    @staticmethod
    def head_input(embedding: Tensor) -> Tensor:
        """What the heads read: the embedding ``(E,)`` (or ``(1, E)``) flattened, divided by sqrt(E)."""
        return embedding.reshape(-1) / math.sqrt(embedding.numel())

    def modulations(self, embedding: Tensor) -> dict[str, tuple[dict[int, Tensor], dict[int, Tensor]]]:
        """``{"forward"|"backward": (gammas, deltas)}`` per modulated layer, for ONE embedding."""
        e = self.head_input(embedding)
        return {net: ({l: self.gamma[f"{net}{l}"](e) for l in self.layers},
                      {l: self.delta[f"{net}{l}"](e) for l in self.layers}) for net in ("forward", "backward")}

    @staticmethod
    def modulated(modulations: dict, forward: Params, backward: Params) -> tuple[Params, Params]:
        """Modulated (forward, backward) params from :meth:`modulations` (not named ``apply``:
        that is ``nn.Module.apply``)."""
        return modulate(forward, *modulations["forward"]), modulate(backward, *modulations["backward"])

    def infuse(self, embedding: Tensor, forward: Params, backward: Params) -> tuple[Params, Params]:
        """Modulated (forward, backward) params for ONE embedding ``(E,)`` or ``(1, E)``."""
        return self.modulated(self.modulations(embedding), forward, backward)
