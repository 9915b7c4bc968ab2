"""Layer 1: reading and writing images, points and pairs; the data-set registry
(``dirlab:``, ``nlst:``, ``cbct:``, ``bundled:``); preprocessing; the global pre-alignment policy."""
