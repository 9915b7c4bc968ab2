"""Layer 4: meta-learned starts: the encoder (paper Table 1), infusion heads, Reptile and
REINDIR training (Algorithm 1), checkpoints. ``rn.meta.train_reptile``, ``rn.meta.load`` ..."""

from .training import (ReindirModel, ReptileTemplate, TrainSettings, load, reptile_update, save_atomic,
                       train_folds, train_reindir, train_reptile)

__all__ = ["ReptileTemplate", "ReindirModel", "TrainSettings", "train_reptile", "train_reindir", "train_folds",
           "reptile_update", "load", "save_atomic"]
