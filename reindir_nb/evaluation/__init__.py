"""Layer 5: evaluation: metrics (TRE, det J statistics), methods behind one Registration
protocol (INR runs, VoxelMorph, elastix), sweeps and their tables, keypoint propagation.
``rn.evaluate`` is this package."""

from .sweep import *  # noqa: F401,F403
from .sweep import __all__  # noqa: F401
