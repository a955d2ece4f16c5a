"""Resolve the requested device to one that exists here, and describe it for the result."""

import logging

from cubicfit.errors import DeviceError

log = logging.getLogger(__name__)


def resolve_device(requested: str, backend: str) -> str:
    """Return 'cpu' or 'cuda:N'; raise DeviceError when a CUDA device is requested but missing."""
    if backend == "numpy" or requested == "cpu":
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    count = torch.cuda.device_count() if available else 0
    if requested == "auto":
        device = "cuda:0" if count else "cpu"
        log.info("device auto resolved to %s%s", device, "" if count else " (no CUDA device found)")
        return device
    index = int(requested.split(":", 1)[1]) if ":" in requested else 0
    if not available or count == 0:
        raise DeviceError(
            f"device {requested!r} requested, but CUDA is not available on this machine "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); "
            "use device cpu or auto, or run on a GPU node"
        )
    if index >= count:
        raise DeviceError(
            f"device {requested!r} requested, but this machine has {count} CUDA device(s) "
            f"(cuda:0 to cuda:{count - 1}); pick an index below {count}"
        )
    return f"cuda:{index}"


def describe_device(device: str) -> str:
    """Return the device with the GPU model when on CUDA, for result.json."""
    if not device.startswith("cuda"):
        return device
    import torch

    return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
