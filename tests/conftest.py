import sys
from pathlib import Path

# tests/ helpers (comfy_env) import as top-level modules under --import-mode=importlib
sys.path.insert(0, str(Path(__file__).parent))
