"""The package version: a leaf module (imports nothing), so any part of the pack can read it
without importing the package root. ``pyproject.toml`` repeats it statically (the Comfy
Registry reads ``[project] version`` from the file, not from code); a test keeps the two
equal."""

__version__ = "0.1.0"
