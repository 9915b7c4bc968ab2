"""Layer 3: the SIREN, its fast derivatives, losses, the ccIDIR objective, test-time
registration (:func:`register` -> :class:`RegistrationRun`) and displacement export.

``rn.inr.siren``, ``rn.inr.init_siren``, ``rn.inr.SirenConfig`` ... are the network functions
(:mod:`reindir_nb.inr.network`)."""

from .network import MODULATED_LAYERS, Params, SirenConfig, clone_params, init_siren, layer, num_layers, phi, siren

__all__ = ["SirenConfig", "init_siren", "siren", "phi", "MODULATED_LAYERS", "num_layers", "layer", "clone_params", "Params"]
