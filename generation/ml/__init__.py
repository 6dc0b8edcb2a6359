"""Machine-learning code of the platform: plain PyTorch and diffusers, no Django.

Importing this package is cheap (no torch), so settings can read the path of
the built-in base model from here.
"""

from pathlib import Path

# The small text-to-image model shipped in the repository (diffusers layout).
BUILTIN_BASE_MODEL = Path(__file__).resolve().parent / "base_model"
