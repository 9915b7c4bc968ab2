"""Layer 5: evaluation: methods behind one Registration protocol (INR runs, VoxelMorph,
elastix), sweeps (resumable, fingerprinted, shardable) and their tables, summaries, keypoint
propagation. Metrics live in :mod:`reindir_nb.core.metrics`. ``rn.evaluate`` is this package."""

from ..core.metrics import deformation_statistics
from .checkpoints import load_models, load_voxelmorph
from .elastix import ElastixConfig, elastix_available, elastix_register
from .methods import ElastixRegistration, InrRegistration, Method, VoxelMorphRegistration, resolve_method
from .propagation import KeypointPropagation, propagate_keypoints
from .protocol import CONVERGED, Registration, Timings, UncertaintyAware
from .results import RESULT_COLUMNS, TIMING_COLUMNS, load_points, load_results, merge_results
from .sharding import resolve_shard, shard_path, shard_tables
from .summaries import format_summary, summary_table, wilcoxon_table
from .sweep import FingerprintMismatch, SweepOutput, sweep
from .workspace import Workspace

__all__ = [
    "CONVERGED", "RESULT_COLUMNS", "TIMING_COLUMNS",
    "Registration", "UncertaintyAware", "Timings",
    "InrRegistration", "VoxelMorphRegistration", "ElastixRegistration", "Method", "resolve_method",
    "sweep", "SweepOutput", "FingerprintMismatch", "load_results", "load_points", "merge_results",
    "resolve_shard", "shard_path", "shard_tables",
    "deformation_statistics", "summary_table", "format_summary", "wilcoxon_table",
    "load_models", "load_voxelmorph",
    "ElastixConfig", "elastix_available", "elastix_register",
    "KeypointPropagation", "propagate_keypoints",
    "Workspace",
]
