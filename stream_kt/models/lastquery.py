"""Last-query transformer + LSTM (Riiid! Answer Correctness Prediction winner, Kaggle 2021).

The winning model fed a window of interactions to a transformer encoder in which only
the LAST position is a query (the others are keys and values only), with no
positional encoding, so the encoder costs O(W) instead of O(W^2); an LSTM then ran
over the encoder's outputs.  Here, after each interaction t:

1. the interaction (item embedding + response embedding) is the single query; it
   attends to the last ``window`` (W) interactions, itself included, with no
   positional encoding (as in the original: order reaches the model through the LSTM);
2. residual + layer norm, feed-forward, residual + layer norm give z_t;
3. an LSTM reads z_t; its output predicts every item at t+1 (DKT's read-out) and only
   the logit of the item actually answered at t+1 is scored.

The original recomputed the LSTM over the whole window for every prediction; running
it along time instead lets the stream carry (h, c) like DKT, so an event costs one
query over W slots plus one LSTM step.  Offline, the attention uses the band mask of
``WindowedAttention.band``: every prediction sees the same last W interactions the
stream stores.  State: ``items``, ``correct``, ``valid`` (B, W) float32 windows
(oldest slot first) and the LSTM's ``h``, ``c`` (B, 1, H).

Questions with skill sets (``max_skills`` > 1; items (..., K) padded with V): an
interaction's embedding is the mean of its skills' interaction embeddings (the mean of
their item embeddings plus the response's), the window's ``items`` is (B, W, K), and a
question's prediction is the mean of its skills' logits (``item_logits``).  The
mastery vector stays one value per skill.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from stream_kt.data.batches import Batch
from stream_kt.models import register
from stream_kt.models.attention import FeedForward, WindowedAttention, empty_window, push_interaction
from stream_kt.models.base import KTModel, State, StepOutput, next_answer_loss
from stream_kt.models.layout import as_input_width, embed_set, gather_time, item_logits, left_align_order, scatter_time
from stream_kt.models.recurrent import lstm_step


@dataclass(frozen=True)
class LastQueryConfig:
    num_items: int  # vocabulary size V
    dim: int = 64  # embedding and attention size
    heads: int = 4
    window: int = 100  # W: interactions the attention sees (and the stream stores per student)
    hidden_size: int = 128  # LSTM state size
    dropout: float = 0.2
    max_skills: int = 1  # K: an answer's skills, (..., K) padded with num_items, when above 1


@register
class LastQuery(KTModel):
    name = "lastquery"
    distillable = True
    takes_skill_sets = True
    Config = LastQueryConfig

    def __init__(self, config: LastQueryConfig) -> None:
        super().__init__(config)
        self.item_embed = nn.Embedding(config.num_items, config.dim)
        self.response_embed = nn.Embedding(2, config.dim)
        self.attention = WindowedAttention(config.dim, config.heads, config.window, age_bias=False)
        self.attention_norm = nn.LayerNorm(config.dim)
        self.feed_forward = FeedForward(config.dim, config.dropout)
        self.feed_forward_norm = nn.LayerNorm(config.dim)
        self.lstm = nn.LSTM(config.dim, config.hidden_size, batch_first=True)
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(config.hidden_size, config.num_items)

    def _interactions(self, items: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
        """Embedding of interactions (...) -> (..., D): one item, or the mean over a skill set (..., K)."""
        if items.dim() == correct.dim():
            return self.item_embed(items) + self.response_embed(correct)
        return embed_set(self.item_embed, items, items < self.config.num_items) + self.response_embed(correct)

    def _encode(self, queries: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        hidden = self.attention_norm(queries + self.dropout(attended))
        return self.feed_forward_norm(hidden + self.dropout(self.feed_forward(hidden)))

    def _hidden(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """LSTM output after each interaction, left-aligned and dropped out, (B, T, H); the
        order that left-aligned it."""
        order = left_align_order(batch.mask)  # real interactions first: index = interaction number
        items, correct, mask = (gather_time(x, order) for x in (batch.items, batch.correct, batch.mask))
        interactions = self._interactions(
            items * mask.view(mask.shape + (1,) * (items.dim() - 2)), correct * mask
        )  # (B, T, D); padding pointed at item 0, masked out
        encoded = self._encode(
            interactions, self.attention.band(interactions, interactions, interactions, mask)
        )  # (B, T, D)
        lengths = mask.sum(1)
        packed = pack_padded_sequence(encoded, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        output, _ = self.lstm(packed)
        hidden, _ = pad_packed_sequence(output, batch_first=True, total_length=items.shape[1])  # (B, T, H)
        return self.dropout(hidden), order, mask

    def forward(self, batch: Batch) -> torch.Tensor:
        hidden, order, mask = self._hidden(batch)
        logits = item_logits(self.out, hidden, gather_time(batch.next_items, order))  # (B, T)
        return scatter_time(logits * mask, order)

    def loss_with_mastery(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The next-answer loss and every item's logit after each interaction, (B, T, V), from one pass."""
        hidden, order, mask = self._hidden(batch)
        next_logits = scatter_time(
            item_logits(self.out, hidden, gather_time(batch.next_items, order)) * mask, order
        )  # (B, T)
        mastery = scatter_time(self.out(hidden) * mask.unsqueeze(-1), order)  # (B, T, V), zero at padding
        return next_answer_loss(next_logits, batch), mastery

    def initial_state(self, batch_size: int) -> State:
        lstm = (batch_size, 1, self.config.hidden_size)
        return {
            **empty_window(batch_size, self.config.window, self.config.max_skills),
            "h": torch.zeros(lstm),
            "c": torch.zeros(lstm),
        }

    def step(
        self,
        state: State,
        items: torch.Tensor,
        correct: torch.Tensor,
        times: torch.Tensor | None = None,
        questions: torch.Tensor | None = None,
    ) -> StepOutput:
        items = as_input_width(items, self.input_width, self.config.num_items)
        p_correct = torch.sigmoid(item_logits(self.out, state["h"][:, 0], items))  # (B,)
        window = push_interaction(state, items, correct)
        stored = self._interactions(window["items"].long(), window["correct"].long())  # (B, W, D)
        newest = self._interactions(items, correct).unsqueeze(1)  # (B, 1, D): the single query
        encoded = self._encode(
            newest, self.attention.window_slots(newest, stored, stored, window["valid"] > 0.5)
        )  # (B, 1, D)
        h, c = lstm_step(self.lstm, encoded[:, 0], state["h"], state["c"])  # (B, 1, H) each
        mastery = torch.sigmoid(self.out(h[:, 0]))  # (B, V)
        return StepOutput(p_correct, {**window, "h": h, "c": c}, mastery)
