"""Layer 6: pictures: one slicing/projection convention and palette, the paper's figures,
linked explorers and widgets. ``rn.figures`` and ``rn.widgets`` are modules of this package."""
