"""Padded batches, whatever side the padding is on, and the per-item read-out.

Models compute on left-aligned rows: ``left_align_order`` moves each row's real
positions (pre-, post- or arbitrary padding) to the front in order, ``gather_time``
applies that order, ``scatter_time`` puts results back where they came from.
"""

from __future__ import annotations

import torch
from torch import nn


def item_logits(out: nn.Linear, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Logit of ``items`` (...) from ``hidden`` (..., H): only each item's output row, not all V logits."""
    return (hidden * out.weight[items]).sum(-1) + out.bias[items]


def left_align_order(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) permutation putting each row's real positions first, in their order."""
    return torch.argsort((~mask).to(torch.int8), dim=1, stable=True)


def gather_time(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Reorder the time dim (dim 1) of (B, T, ...) by ``order`` (B, T)."""
    index = order.view(order.shape + (1,) * (x.dim() - 2)).expand_as(x)
    return x.gather(1, index)


def scatter_time(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Inverse of ``gather_time``: put left-aligned (B, T, ...) values back at their positions."""
    index = order.view(order.shape + (1,) * (x.dim() - 2)).expand_as(x)
    return torch.zeros_like(x).scatter(1, index, x)
