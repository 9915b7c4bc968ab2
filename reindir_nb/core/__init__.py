"""Layer 0: geometry (the one index <-> world mm <-> INR [-1, 1] convention), Volume, Pair,
device selection, run profiles and atomic file writes. Imports nothing else of the kit."""
