"""Layer 4: meta-learned starts: the encoder (paper Table 1), infusion heads, the models and their
files (:mod:`.models`), the training recipes (:mod:`.recipes`), the trainer (:mod:`.trainer`) and
the training runs (:mod:`.training`). ``rn.meta.recipe("reindir", "demo")``,
``rn.meta.train_reptile``, ``rn.meta.load`` ..."""

from .models import ReindirModel, ReptileTemplate, load, save_atomic
from .recipes import Architecture, Recipe, TrainSettings, recipe, profile_recipes
from .trainer import reptile_step, reptile_update
from .training import Monitor, TrainingFiles, train_folds, train_reindir, train_reptile

__all__ = ["ReptileTemplate", "ReindirModel", "TrainSettings", "Architecture", "Recipe", "recipe", "profile_recipes",
           "train_reptile", "train_reindir", "train_folds", "TrainingFiles", "Monitor", "reptile_update",
           "reptile_step", "load", "save_atomic"]
