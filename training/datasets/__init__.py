"""Data sets generated in code (no download) for the models trained here; pure numpy / PIL."""
