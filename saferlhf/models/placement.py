"""Where an inference model runs and in which precision: ``--device`` / ``--dtype`` of `serve` and `generate`.

``auto`` picks CUDA in bfloat16 when a GPU is visible (float16 on GPUs without bfloat16), else the CPU in
float32. An explicit choice is checked: a device that is not there, or float16 on the CPU (slow and partly
unsupported there), is a `ConfigError` naming the field, before any model is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from saferlhf.config import ConfigError

if TYPE_CHECKING:
    import torch

Device = Literal["auto", "cpu", "cuda", "mps"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
DEVICE_HELP = "where the model runs: auto (cuda when available, else cpu), cpu, cuda or mps"
DTYPE_HELP = "weights' precision: auto (bfloat16 on cuda, float32 elsewhere), float32, bfloat16 or float16"
DTYPES = ("float32", "bfloat16", "float16")


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_placement(device: str, dtype: str, prefix: str = "") -> tuple[str, torch.dtype]:
    """(torch device name, torch dtype) for the ``device`` / ``dtype`` options; ``prefix`` is put before the
    field names in errors (``"serve: "``); imports torch only when called."""
    import torch

    if device not in ("auto", "cpu", "cuda", "mps"):
        raise ConfigError(f"{prefix}device: {device!r} is not one of auto, cpu, cuda, mps")
    if dtype != "auto" and dtype not in DTYPES:
        raise ConfigError(f"{prefix}dtype: {dtype!r} is not one of auto, float32, bfloat16, float16")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{prefix}device: cuda was asked for but torch sees no CUDA GPU "
                          f"(torch {torch.__version__}); use --device cpu or auto")
    elif device == "mps" and not _mps_available():
        raise ConfigError(f"{prefix}device: mps was asked for but torch's MPS backend is not available here; "
                          "use --device cpu or auto")
    if dtype == "auto":
        if device == "cuda":
            return device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return device, torch.float32
    if device == "cpu" and dtype == "float16":
        raise ConfigError(f"{prefix}dtype: float16 is not supported on the CPU (slow, and some kernels are "
                          "missing); use float32 or bfloat16")
    return device, getattr(torch, dtype)
