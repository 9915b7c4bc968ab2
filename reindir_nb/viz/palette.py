"""The one palette of the kit's pictures (hex colours, matplotlib and plotly alike).

* ``FIXED`` (teal): fixed (inspiration) landmarks. The paper's qualitative panels draw the
  fixed landmarks *carried by the registration*, ``phi(l_fixed)``, in this teal (its Figures 4,
  5, 9-11), so :mod:`reindir_nb.viz.figures` uses it for those predictions too.
* ``MOVING`` (pink): moving (expiration) landmarks.
* ``PREDICTED`` (orange): predicted positions where fixed landmarks are shown as well (explorers).
* ``LINK``: the line joining a landmark to its partner; ``DEFORMED_GRID``: deformed grid lines.
* ``METHOD_COLOURS``: one colour per method in curves and tables (:func:`method_colour`).
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = ["FIXED", "MOVING", "PREDICTED", "LINK", "DEFORMED_GRID", "METHOD_COLOURS", "method_colour"]

FIXED = "#009999"
MOVING = "#ff3399"
PREDICTED = "#ff8c00"
LINK = "#000000"
DEFORMED_GRID = "#ffd000"

METHOD_COLOURS = MappingProxyType({
    "No registration": "#7f7f7f",
    "ccIDIR": "#1f77b4",
    "ccIDIR-identity": "#17becf",
    "Random": "#1f77b4",
    "Reptile": "#2ca02c",
    "REINDIR": "#ff7f0e",
    "VoxelMorph": "#d62728",
    "elastix": "#9467bd",
})


def method_colour(method: str, index: int = 0) -> str:
    """Colour of ``method``: its entry in :data:`METHOD_COLOURS`, else matplotlib's cycle colour
    ``C<index % 10>`` (``index``: the method's position in the plot)."""
    return METHOD_COLOURS.get(method, f"C{int(index) % 10}")
