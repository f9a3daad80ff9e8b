"""SAKT (Pandey & Karypis, EDM 2019): the next exercise attends to the student's past interactions.

The query is the embedding of the exercise about to be answered; keys and values are
the embeddings of past interactions (item i answered r -> index ``i + V * r``), with
their age relative to the query as a learned per-head score bias (SAKT's position
embedding, made relative so it survives the window sliding).  One attention block
(residual from the query, layer norm, feed-forward) and a linear read-out give the
logit.

Window: every prediction sees the last ``window`` (W) interactions only, offline and
streamed alike.  ``forward`` applies the band mask of ``WindowedAttention.band``, so
for students with more than W answers the offline predictions are exactly what the
stream serves.  The streaming state is that window: ``items``, ``correct`` and
``valid`` as (B, W) float32 (oldest slot first); one event costs one query over W slots,
O(W), and the mastery vector is V queries over the same W slots.

Questions with skill sets (``max_skills`` > 1; items (..., K) padded with V): a past
interaction's embedding is the mean of its skills' interaction embeddings, and the
query of a question the mean of its skills' exercise embeddings; the read-out scores
that one query.  The window's ``items`` is then (B, W, K).  The mastery vector stays
one value per skill: each skill asked on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stream_kt.data.batches import Batch
from stream_kt.models import register
from stream_kt.models.attention import FeedForward, WindowedAttention, empty_window, push_interaction
from stream_kt.models.base import KTModel, State, StepOutput
from stream_kt.models.layout import as_input_width, embed_set, gather_time, left_align_order, scatter_time


@dataclass(frozen=True)
class SAKTConfig:
    num_items: int  # vocabulary size V
    dim: int = 64  # embedding and attention size
    heads: int = 4
    window: int = 100  # W: interactions a prediction sees (and the stream stores per student)
    dropout: float = 0.2
    max_skills: int = 1  # K: an answer's skills, (..., K) padded with num_items, when above 1


@register
class SAKT(KTModel):
    name = "sakt"
    takes_skill_sets = True
    Config = SAKTConfig

    def __init__(self, config: SAKTConfig) -> None:
        super().__init__(config)
        self.interaction_embed = nn.Embedding(2 * config.num_items, config.dim)
        self.exercise_embed = nn.Embedding(config.num_items, config.dim)
        self.attention = WindowedAttention(config.dim, config.heads, config.window, age_bias=True)
        self.attention_norm = nn.LayerNorm(config.dim)
        self.feed_forward = FeedForward(config.dim, config.dropout)
        self.feed_forward_norm = nn.LayerNorm(config.dim)
        self.dropout = nn.Dropout(config.dropout)
        self.read_out = nn.Linear(config.dim, 1)

    def _interactions(self, items: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
        """Embedding of interactions (...) -> (..., D): one item, or the mean over a skill set (..., K)."""
        if items.dim() == correct.dim():
            return self.interaction_embed(items + self.config.num_items * correct)
        return embed_set(
            self.interaction_embed, items + self.config.num_items * correct.unsqueeze(-1), items < self.config.num_items
        )

    def _exercises(self, items: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
        """Query embedding of exercises (shaped as ``correct``, ...) -> (..., D): one item, or the mean
        over a skill set (..., K)."""
        if items.dim() == correct.dim():
            return self.exercise_embed(items)
        return embed_set(self.exercise_embed, items, items < self.config.num_items)

    def _block(self, exercises: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """Residual + norm around attention and feed-forward, then the logit: (B, N, D) -> (B, N)."""
        hidden = self.attention_norm(exercises + self.dropout(attended))
        hidden = self.feed_forward_norm(hidden + self.dropout(self.feed_forward(hidden)))
        return self.read_out(hidden).squeeze(-1)

    def forward(self, batch: Batch) -> torch.Tensor:
        order = left_align_order(batch.mask)  # real interactions first: index = interaction number
        items, correct, next_items, mask = (
            gather_time(x, order) for x in (batch.items, batch.correct, batch.next_items, batch.mask)
        )
        # padding may hold anything: point it at item 0 (it is masked out of every key set)
        items, correct = items * mask.view(mask.shape + (1,) * (items.dim() - 2)), correct * mask
        interactions = self._interactions(items, correct)  # (B, T, D)
        exercises = self._exercises(next_items, correct)  # (B, T, D): query t is the exercise answered at t+1
        attended = self.attention.band(exercises, interactions, interactions, mask)  # (B, T, D)
        return scatter_time(self._block(exercises, attended), order)  # (B, T)

    def initial_state(self, batch_size: int) -> State:
        return empty_window(batch_size, self.config.window, self.config.max_skills)

    def _logits_over_window(self, state: State, exercises: torch.Tensor) -> torch.Tensor:
        """Logits of Q exercises (B, Q, D) attending to the stored window: (B, Q)."""
        interactions = self._interactions(state["items"].long(), state["correct"].long())  # (B, W, D)
        attended = self.attention.window_slots(exercises, interactions, interactions, state["valid"] > 0.5)
        return self._block(exercises, attended)

    def step(
        self,
        state: State,
        items: torch.Tensor,
        correct: torch.Tensor,
        times: torch.Tensor | None = None,
        questions: torch.Tensor | None = None,
    ) -> StepOutput:
        items = as_input_width(items, self.input_width, self.config.num_items)
        p_correct = torch.sigmoid(
            self._logits_over_window(state, self._exercises(items, correct).unsqueeze(1))[:, 0]
        )  # (B,)
        new_state = push_interaction(state, items, correct)
        every_exercise = self.exercise_embed.weight.unsqueeze(0).expand(len(items), -1, -1)  # (B, V, D)
        mastery = torch.sigmoid(self._logits_over_window(new_state, every_exercise))  # (B, V)
        return StepOutput(p_correct, new_state, mastery)
