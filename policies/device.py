"""Where a module's tensors live: the one device lookup every part of the pack uses."""

from __future__ import annotations

import torch
from torch import nn


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter, else of its first buffer, else the CPU (a
    deployed policy may hold only buffers, e.g. a distilled fixed schedule)."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


__all__ = ["module_device"]
