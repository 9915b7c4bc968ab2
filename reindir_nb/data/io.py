"""Reading and writing images, landmark files and prepared pairs: the short public name
``rn.io`` of the three modules that hold them.

* :mod:`reindir_nb.data.images`: :func:`read_image` / :func:`write_image` (header and truncation
  checks, atomic single-file writes), :func:`ct_value_problem`, the DIR-LAB raw image reader;
* :mod:`reindir_nb.data.points`: landmark / point files (DIR-LAB txt, Learn2Reg csv, elastix point
  sets, generic csv with stated units), :func:`read_points` / :func:`write_points_csv`;
* :mod:`reindir_nb.data.store`: saved pair folders and the journalled, all-or-nothing
  :func:`save_pairs` / :func:`load_manifest`.

Every reader returns world-mm geometry, every writer is atomic (:mod:`reindir_nb.core.files`), and
every error names the file and the problem (docs/reliability.md lists every hostile-input case).
"""

from __future__ import annotations

from ..core.files import atomic_folder, atomic_path, ensure_writable
from . import images, points, store
from .images import *  # noqa: F401,F403  (each module's __all__)
from .points import *  # noqa: F401,F403
from .store import *  # noqa: F401,F403

__all__ = ["atomic_path", "atomic_folder", "ensure_writable", *images.__all__, *points.__all__, *store.__all__]
