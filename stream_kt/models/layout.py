"""Padded batches, whatever side the padding is on, and the per-item read-out.

Models compute on left-aligned rows: ``left_align_order`` moves each row's real
positions (pre-, post- or arbitrary padding) to the front in order, ``gather_time``
applies that order, ``scatter_time`` puts results back where they came from.
"""

from __future__ import annotations

import torch
from torch import nn


def item_logits(out: nn.Linear, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Logit of ``items`` from ``hidden`` (..., H): only each item's output row, not all V logits.

    ``items`` (...) are single items; (..., K) are skill sets padded with V, whose logit is
    the mean of their skills' logits (a question's prediction combines its skills).
    """
    if items.dim() == hidden.dim() - 1:
        return (hidden * out.weight[items]).sum(-1) + out.bias[items]
    valid = items < out.weight.shape[0]
    index = items.masked_fill(~valid, 0)
    per_skill = (hidden.unsqueeze(-2) * out.weight[index]).sum(-1) + out.bias[index]  # (..., K)
    return set_mean(per_skill, valid)


def set_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` (..., K[, E]) over each set's valid members ``valid`` (..., K); 0 for an empty set."""
    if values.dim() > valid.dim():
        return (values * valid.unsqueeze(-1)).sum(-2) / valid.sum(-1, keepdim=True).clamp(min=1)
    return (values * valid).sum(-1) / valid.sum(-1).clamp(min=1)


def embed_set(embedding: nn.Embedding, index: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``embedding``'s rows ``index`` (..., K) over each set's ``valid`` members (..., K) -> (..., E); invalid
    indices are never looked up."""
    return set_mean(embedding(index.masked_fill(~valid, 0)), valid)


def as_input_width(items: torch.Tensor, width: int, num_items: int) -> torch.Tensor:
    """A step's items (B,) or (B, K) as the model's input width: single items become sets of one (padded with
    ``num_items``) for a model that stores sets; a set reaching a model that stores single items is an error."""
    if width > 1 and items.dim() == 1:
        return nn.functional.pad(items.unsqueeze(-1), (0, width - 1), value=num_items)
    if width == 1 and items.dim() != 1:
        raise ValueError(f"items of shape {tuple(items.shape)}: this model takes one item an answer (max_skills 1)")
    return items


def gather_items(all_logits: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """From every item's logit (..., V), the logit of ``items`` (...), or of skill sets (..., K)
    padded with V (their mean)."""
    if items.dim() == all_logits.dim() - 1:
        return all_logits.gather(-1, items.unsqueeze(-1)).squeeze(-1)
    valid = items < all_logits.shape[-1]
    return set_mean(all_logits.gather(-1, items.masked_fill(~valid, 0)), valid)


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
