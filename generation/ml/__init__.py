"""Machine-learning code of the platform: plain PyTorch and diffusers, no Django.

Importing this package is cheap (no torch), so settings can read the path of
the built-in base model from here.
"""

import hashlib
import logging
import os
from pathlib import Path

# Read by OpenMP when torch is first imported, so it is set here, before any
# module of this package imports torch. With the default (spinning) wait
# policy, one other busy process on a 2-core machine made training steps about
# four times and the ML tests ten times slower (184 s -> 18 s with PASSIVE).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class _DropTorchvisionFallbackNotes(logging.Filter):
    """Importing diffusers, transformers says its CLIP and SigLIP image processors fall back from torchvision to PIL:
    two lines at the start of every command and worker. No pipeline here uses an image processor (the bases carry
    no safety checker), and torchvision is left out on purpose (PyPI's does not import beside this torch)."""

    def filter(self, record):
        return "requires torchvision (not installed)" not in record.getMessage()


# Set before transformers exists: its get_logger returns this same logger object.
logging.getLogger("transformers.utils.import_utils").addFilter(_DropTorchvisionFallbackNotes())


def default_threads() -> int:
    """CPU threads for one ML process: half the cores this process may use, at least one.

    The embedded platform runs two ML workers (training; generation) beside the
    web server, so half each keeps them from oversubscribing the cores. More
    threads are not free under the PASSIVE policy above: every parallel region
    wakes sleeping threads. On a 2-core Xeon one thread trained the standard
    preset's step in 213 ms against 420 ms with two (and sampled 2.3x faster).
    """
    return max(1, len(os.sched_getaffinity(0)) // 2)


# The small text-to-image model shipped in the repository (diffusers layout).
BUILTIN_BASE_MODEL = Path(__file__).resolve().parent / "base_model"
# The one file of an adapter folder, as diffusers' save_lora_weights names it.
WEIGHTS_NAME = "pytorch_lora_weights.safetensors"


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, read in blocks (adapters, works and model weights are named by it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
