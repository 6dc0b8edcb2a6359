"""The device and precision a model runs in when none is asked for: one rule for training and for sampling."""

from __future__ import annotations

import torch

DTYPES_BY_NAME = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
                  "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """`device`, else CUDA when present, else Apple's MPS when present, else the CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def has_native_bf16(device: str | torch.device) -> bool:
    """Whether this CUDA GPU computes in bf16 itself: compute capability 8.0 (Ampere) and later.

    Not `torch.cuda.is_bf16_supported()`: it also says yes where bf16 is only emulated (a T4, a V100), far slower
    than fp16, and it asks about the current GPU, not this one."""
    return torch.cuda.get_device_capability(torch.device(device)) >= (8, 0)


def pick_dtype(device: str | torch.device, dtype: torch.dtype | str | None = None) -> torch.dtype:
    """`dtype` (a torch dtype, or fp32, fp16 or bf16), else the precision for `device`: bf16 on a GPU that has
    it natively (no fp16 overflow in the SDXL VAE), fp16 on older GPUs and on MPS, fp32 on the CPU (half
    precision is slow or unsupported there)."""
    if isinstance(dtype, str):
        return DTYPES_BY_NAME[dtype]
    if dtype is not None:
        return dtype
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if has_native_bf16(device) else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def choose_device_and_dtype(device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """`pick_device`, then `pick_dtype` for it."""
    device = pick_device(device)
    return device, pick_dtype(device, dtype)
