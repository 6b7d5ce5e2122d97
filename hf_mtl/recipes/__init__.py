"""Reusable recipe entry points (the scripts under ``recipes/`` and ``hf-mtl train`` call them)."""
