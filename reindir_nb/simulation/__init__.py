"""Layer 2: phantom cohorts, breathing motion, the bundled real-anatomy pair, landmark detection.
Importing this package registers the ``phantom:`` scheme and ``bundled:thorax-ct`` with
:mod:`reindir_nb.data.datasets`."""

from __future__ import annotations

from typing import Any

from ..core.pair import Pair
from ..data.datasets import register_bundled, register_source


def _phantom_pair(body: str, number: str | None, **kwargs: Any) -> Pair:
    from .phantom import make_pair

    if number is not None:
        if "seed" in kwargs:
            raise ValueError(f"phantom:{body}:{number}: seed given twice (in the spec and as seed={kwargs['seed']})")
        kwargs["seed"] = int(number)
    return make_pair(style=body, **kwargs)


def _phantom_cohort(body: str, progress: bool = True, **kwargs: Any) -> list[Pair]:
    from .phantom import make_cohort

    return make_cohort(body, progress=progress, **kwargs)


def _thorax_ct_pair(**kwargs: Any) -> Pair:
    from .bundled import thorax_ct_pair

    return thorax_ct_pair(**kwargs)


register_source("phantom", _phantom_pair, _phantom_cohort)
register_bundled("thorax-ct", _thorax_ct_pair)
