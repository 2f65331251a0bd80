"""Where the ML stages run: the device a setting asks for, mixed precision on it, seeded generators.

* :func:`select_device`   ``"auto"`` (CUDA when present, else the CPU), ``"cpu"`` or ``"cuda"``
  (``"cuda:<index>"``) to a :class:`torch.device`; asking for CUDA where there is none is a
  :class:`~offchain.errors.ConfigError`, not a silent fall-back.
* :func:`autocast`        bfloat16 autocast on a CUDA device that supports it; a no-op on the CPU
  (CPU numbers stay float32 and bit-for-bit as before).
* :func:`torch_generator` a ``torch.Generator`` on a device, seeded.

Checkpoints are loaded on the CPU (``ModelBackend.load``); the stage that computes moves the
model to the device it selected.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import torch

from offchain.errors import ConfigError

__all__ = ["DEVICE_CHOICES", "autocast", "select_device", "torch_generator"]

DEVICE_CHOICES = ("auto", "cpu", "cuda")
"""The values of the ``device`` setting (``"cuda:<index>"`` picks one of several GPUs)."""

_CUDA_INDEX = re.compile(r"cuda:(\d+)")


def select_device(preference: str = "auto") -> torch.device:
    """The device a ``device`` setting names.

    Args:
        preference: ``"auto"`` (CUDA device 0 when ``torch.cuda.is_available()``, else the
            CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``.

    Returns:
        ``torch.device("cpu")`` or ``torch.device("cuda", index)``.

    Raises:
        ConfigError: an unknown value, or CUDA asked for where none is available (or the index
            is out of range).
    """
    if not isinstance(preference, str):
        raise ConfigError(f"device must be a string, one of {list(DEVICE_CHOICES)}, got "
                          f"{preference!r}")
    choice = preference.strip().lower()
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    match = _CUDA_INDEX.fullmatch(choice)
    if choice != "cuda" and match is None:
        raise ConfigError(
            f"device must be one of {list(DEVICE_CHOICES)} or 'cuda:<index>', got {preference!r}"
        )
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device={preference!r} but CUDA is not available here (torch "
            f"{torch.__version__}, built for CUDA {torch.version.cuda}); use device='auto' or "
            "'cpu'"
        )
    index = int(match.group(1)) if match is not None else 0
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"device={preference!r} but only {torch.cuda.device_count()} CUDA device(s) exist"
        )
    return torch.device("cuda", index)


@contextlib.contextmanager
def autocast(device: torch.device) -> Iterator[None]:
    """Mixed precision for the body's forward passes on ``device``.

    On a CUDA device that supports bfloat16 (Ampere and later): ``torch.autocast("cuda",
    dtype=torch.bfloat16)`` — matrix products and convolutions in bfloat16, reductions and the
    parameters (hence the optimizer) in float32; bfloat16 has float32's exponent range, so
    training needs no loss scaling. On older GPUs and on the CPU: nothing changes (float32).
    """
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def torch_generator(device: torch.device | str, seed: int) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``.

    Streams differ between devices: the backends draw their training and sampling noise from a
    CPU generator and move it, so a seed gives the same noise on every device.
    """
    return torch.Generator(device=torch.device(device)).manual_seed(int(seed))
