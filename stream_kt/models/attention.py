"""Masked attention over a sliding window of the last W positions, offline and streamed.

Every attention model here lets a prediction see only the last ``window`` (W)
positions, so that the stream can keep a fixed-size window per student and answer each
event with one query over W stored slots: O(W) per event, never O(W^2), and exactly the
numbers the offline forward computes.  Two entry points compute the same attention:

* ``WindowedAttention.band``: every position t of a left-aligned sequence attends to
  the valid positions in (t - W, t].  Offline forward.  Queries run in chunks of W,
  so memory is O(T * W), not O(T^2), over histories of a thousand answers.
* ``WindowedAttention.window``: Q queries of one new position attend to W stored slots
  (oldest first, newest last).  ``step``.

Positions are encoded (where a model wants them) as the *age* of a key relative to its
query (0 = the newest), a learned per-head score bias: an absolute position would shift
every time the window slides, and the window must score the same offline and streamed.

Padding: an invalid key gets weight exactly 0 (a finite floor before the softmax, the
mask multiplied in after it), so results do not depend on how much padding a batch
has; a query with no valid key gets a zero vector, never NaN.

Models compute on left-aligned rows (``stream_kt.models.layout``), so a position
index is the interaction's index.
"""

from __future__ import annotations

import math

import torch
from torch import nn

SCORE_FLOOR = -1e9  # exp(SCORE_FLOOR - max) is exactly 0 in float32


def masked_softmax(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim with disallowed entries at exactly 0 (all-disallowed rows: all 0)."""
    weights = torch.softmax(scores.masked_fill(~allowed, SCORE_FLOOR), dim=-1)
    return weights * allowed


class WindowedAttention(nn.Module):
    """Multi-head attention whose queries see at most the last ``window`` keys."""

    def __init__(self, dim: int, heads: int, window: int, age_bias: bool) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.window = heads, window
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        # score bias by key age 0..W-1 per head; None: the model wants no positions
        self.age_bias = nn.Parameter(torch.zeros(heads, window)) if age_bias else None

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        return x.view(batch, length, self.heads, dim // self.heads).transpose(1, 2)  # (B, H, N, dh)

    def _merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, heads, length, head_dim = x.shape
        return self.out(x.transpose(1, 2).reshape(batch, length, heads * head_dim))  # (B, N, D)

    def band(
        self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """Query t attends to the valid keys at t-W+1..t.  queries, keys, values (B, T, D);
        valid (B, T) -> (B, T, D)."""
        batch, length, _ = queries.shape
        window = self.window
        q = self._split_heads(self.query(queries)) / math.sqrt(
            queries.shape[-1] // self.heads
        )  # (B, H, T, dh), pre-scaled
        k, v = self._split_heads(self.key(keys)), self._split_heads(self.value(values))
        # chunks of C queries; each chunk sees its own C positions plus the `past` before it
        chunk = min(length, window)
        past = 0 if length <= window else window - 1
        n_chunks = math.ceil(length / chunk)
        tail = n_chunks * chunk - length
        span = chunk + past
        q = nn.functional.pad(q, (0, 0, 0, tail)).reshape(
            *q.shape[:2], n_chunks, chunk, q.shape[-1]
        )  # (B, H, n, C, dh)
        k = nn.functional.pad(k, (0, 0, past, tail)).unfold(2, span, chunk)  # (B, H, n, dh, S)
        v = nn.functional.pad(v, (0, 0, past, tail)).unfold(2, span, chunk).transpose(-1, -2)  # (B, H, n, S, dh)
        key_valid = nn.functional.pad(valid, (past, tail), value=False).unfold(1, span, chunk)  # (B, n, S)
        # query i of a chunk sits at chunk_start + i, key s at chunk_start - past + s
        positions = torch.arange(span, device=queries.device)
        age = positions[:chunk].view(-1, 1) - positions.view(1, -1) + past  # (C, S)
        in_band = (age >= 0) & (age < window)
        scores = q @ k  # (B, H, n, C, S)
        if self.age_bias is not None:
            scores = scores + self.age_bias[:, age.clamp(0, window - 1)].unsqueeze(1)  # (H, 1, C, S) broadcast
        allowed = in_band & key_valid[:, None, :, None, :]  # (B, 1, n, C, S)
        out = masked_softmax(scores, allowed) @ v  # (B, H, n, C, dh)
        return self._merge_heads(out.flatten(2, 3)[:, :, :length])

    def window_slots(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        valid: torch.Tensor,
        own_keys: torch.Tensor | None = None,
        own_values: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Q queries over S stored slots (oldest first): queries (B, Q, D), keys/values (B, S, D),
        valid (B, S) -> (B, Q, D).

        With ``own_keys``/``own_values`` (B, Q, D), each query also sees a slot of its own
        at age 0 (the query's own position, different for each candidate query) and the
        stored slots are ages S..1; then S = W - 1.  Without, the stored slots are ages
        S-1..0 and S = W.
        """
        q = self._split_heads(self.query(queries)) / math.sqrt(
            queries.shape[-1] // self.heads
        )  # (B, H, Q, dh), pre-scaled
        k, v = self._split_heads(self.key(keys)), self._split_heads(self.value(values))  # (B, H, S, dh)
        slots = keys.shape[1]
        own = own_keys is not None
        scores = q @ k.transpose(-1, -2)  # (B, H, Q, S)
        if self.age_bias is not None:
            # slot s (oldest first) has age S-1-s (+1 with an own slot): a reversed slice, no index tensor
            slot_bias = self.age_bias[:, int(own) : int(own) + slots].flip(-1)  # (H, S)
            scores = scores + slot_bias.view(1, self.heads, 1, slots)
        key_valid = valid[:, None, None, :]  # (B, 1, 1, S)
        if not own:
            return self._merge_heads(masked_softmax(scores, key_valid) @ v)
        own_k, own_v = self._split_heads(self.key(own_keys)), self._split_heads(self.value(own_values))  # (B, H, Q, dh)
        own_score = (q * own_k).sum(-1, keepdim=True)  # (B, H, Q, 1)
        if self.age_bias is not None:
            own_score = own_score + self.age_bias[:, 0].view(1, self.heads, 1, 1)
        # the own slot is always valid, so no row is empty: a plain softmax leaves invalid slots at exactly 0
        weights = torch.softmax(
            torch.cat([scores.masked_fill(~key_valid, SCORE_FLOOR), own_score], -1), -1
        )  # (B, H, Q, S + 1)
        return self._merge_heads(weights[..., :slots] @ v + weights[..., slots:] * own_v)


class FeedForward(nn.Sequential):
    """Position-wise two-layer MLP of a transformer block."""

    def __init__(self, dim: int, dropout: float, expansion: int = 4) -> None:
        super().__init__(
            nn.Linear(dim, expansion * dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(expansion * dim, dim)
        )


def push(window: torch.Tensor, newest: torch.Tensor) -> torch.Tensor:
    """Slide a (B, W, ...) window by one: drop the oldest slot, append ``newest`` (B, ...)."""
    return torch.cat([window[:, 1:], newest.unsqueeze(1).to(window.dtype)], 1)


def empty_window(batch_size: int, window: int, skills: int = 1) -> dict[str, torch.Tensor]:
    """The stored-interaction state of a student with no answers: ``items``, ``correct``, ``valid`` (B, W).

    With ``skills`` K above 1, ``items`` is (B, W, K): each slot a skill set padded with V.
    """
    shape = (batch_size, window)
    return {
        "items": torch.zeros(shape + ((skills,) if skills > 1 else ())),
        "correct": torch.zeros(shape),
        "valid": torch.zeros(shape),
    }


def push_interaction(
    state: dict[str, torch.Tensor], items: torch.Tensor, correct: torch.Tensor
) -> dict[str, torch.Tensor]:
    """``empty_window``'s three windows with one answered interaction appended: items (B,) or (B, K), correct (B,)."""
    return {
        "items": push(state["items"], items),
        "correct": push(state["correct"], correct),
        "valid": push(state["valid"], torch.ones_like(correct)),
    }
