"""DKT+ (Yeung & Yeung, L@S 2018): DKT trained with prediction-consistency regularisers.

Same network, state and streaming step as DKT (``stream_kt.models.dkt``); only the loss
differs.  With ``y_t`` = sigmoid of all V outputs after interaction t (the mastery
vector), the loss adds to the next-answer cross-entropy:

* ``reconstruction_weight`` (lambda_r) x cross-entropy of ``y_t[item_t]`` against the
  answer just given: a model that sees a right answer should not lower its estimate
  for that very item (the paper's "reconstruction problem");
* ``waviness_l1_weight`` (lambda_w1) x mean |y_{t+1} - y_t| and ``waviness_l2_weight``
  (lambda_w2) x mean (y_{t+1} - y_t)^2 over consecutive interactions and all V items:
  mastery should move smoothly, not wave up and down between steps.

Defaults are the paper's choice for ASSISTments 2009 (0.1, 0.003, 3.0).

``extra_metrics`` reports the paper's consistency measures on held-out students,
which ``evaluate`` adds next to AUC: ``reconstruction_auc`` (AUC of ``y_t[item_t]``
for the answer at t), ``waviness_l1`` (w1, mean absolute change) and ``waviness_l2``
(w2, root of the mean squared change), over every student's whole history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from stream_kt.data.batches import Batch, make_batch, row_of
from stream_kt.data.vocab import EncodedSequence
from stream_kt.models import register
from stream_kt.models.base import next_answer_loss
from stream_kt.models.dkt import DKT, DKTConfig
from stream_kt.models.layout import gather_items, gather_time, left_align_order
from stream_kt.prediction_metrics import auc


@dataclass(frozen=True)
class DKTPlusConfig(DKTConfig):
    reconstruction_weight: float = 0.1  # lambda_r
    waviness_l1_weight: float = 0.003  # lambda_w1
    waviness_l2_weight: float = 3.0  # lambda_w2


@dataclass
class ConsistencyTerms:
    """Per-batch sums from which both the regularisers and the reported metrics are means."""

    current_logits: torch.Tensor  # (N,) logit of y_t[item_t] at every real interaction
    current_labels: torch.Tensor  # (N,) the answer at t
    abs_change: torch.Tensor  # () sum of |y_{t+1} - y_t| over consecutive pairs and items
    squared_change: torch.Tensor  # () sum of (y_{t+1} - y_t)^2
    n_changes: int  # consecutive pairs x V


@register
class DKTPlus(DKT):
    name = "dkt_plus"
    distillable = True
    Config = DKTPlusConfig

    def consistency_terms(self, batch: Batch, dropout: bool) -> ConsistencyTerms:
        hidden, _ = self.hidden_states(
            batch.items, batch.correct, batch.mask, questions=batch.questions
        )  # (B, T, H), zero at padding
        return self._consistency(self.out(self.dropout(hidden) if dropout else hidden), batch)

    def _consistency(self, all_logits: torch.Tensor, batch: Batch) -> ConsistencyTerms:
        """The terms from ``all_logits`` (B, T, V): every item's logit after every interaction."""
        # consecutive interactions are consecutive real positions, wherever the padding is
        order = left_align_order(batch.mask)
        all_logits, items, correct, mask = (
            gather_time(x, order) for x in (all_logits, batch.items, batch.correct, batch.mask)
        )
        current_logits = gather_items(all_logits, items)  # (B, T): the answered item's, or its skills' mean
        mastery = torch.sigmoid(all_logits)
        pair = (mask[:, 1:] & mask[:, :-1]).unsqueeze(-1)  # (B, T-1, 1)
        change = (mastery[:, 1:] - mastery[:, :-1]) * pair  # (B, T-1, V)
        return ConsistencyTerms(
            current_logits[mask],
            correct[mask].float(),
            change.abs().sum(),
            change.pow(2).sum(),
            int(pair.sum()) * self.config.num_items,
        )

    def loss(self, batch: Batch) -> torch.Tensor:
        return self.loss_with_mastery(batch)[0]

    def loss_with_mastery(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        # one LSTM pass and one dropout mask serve the next-answer loss, the regularisers and the mastery
        hidden, _ = self.hidden_states(batch.items, batch.correct, batch.mask, questions=batch.questions)
        hidden = self.dropout(hidden)
        all_logits = self.out(hidden)  # (B, T, V): every item after every interaction
        next_loss = next_answer_loss(self.answer_logits(hidden, batch.next_items, batch.next_questions), batch)
        terms = self._consistency(all_logits, batch)
        reconstruction = nn.functional.binary_cross_entropy_with_logits(terms.current_logits, terms.current_labels)
        pairs = max(terms.n_changes, 1)
        config = self.config
        loss = (
            next_loss
            + config.reconstruction_weight * reconstruction
            + config.waviness_l1_weight * terms.abs_change / pairs
            + config.waviness_l2_weight * terms.squared_change / pairs
        )
        return loss, all_logits

    @torch.no_grad()
    def extra_metrics(self, sequences: Sequence[EncodedSequence], batch_size: int = 32) -> dict[str, float]:
        """The paper's consistency measures over whole histories (see the module docstring)."""
        was_training = self.training
        self.eval()
        logits, labels = [], []
        abs_change = squared_change = 0.0
        n_changes = 0
        ordered = sorted((s for s in sequences if len(s) >= 1), key=len)  # similar lengths share a batch
        for start in range(0, len(ordered), batch_size):
            chunk = ordered[start : start + batch_size]
            terms = self.consistency_terms(make_batch([row_of(s) for s in chunk]), dropout=False)
            logits.append(terms.current_logits.numpy())
            labels.append(terms.current_labels.numpy())
            abs_change += terms.abs_change.item()
            squared_change += terms.squared_change.item()
            n_changes += terms.n_changes
        self.train(was_training)
        if not logits:
            return {}
        pairs = max(n_changes, 1)
        return {
            "reconstruction_auc": auc(np.concatenate(labels), np.concatenate(logits)),
            "waviness_l1": abs_change / pairs,
            "waviness_l2": float(np.sqrt(squared_change / pairs)),
        }
