import sys
from pathlib import Path

# tests import their helpers (nbrun) directly
sys.path.insert(0, str(Path(__file__).parent))
