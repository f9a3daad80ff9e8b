"""The alternatives a user would otherwise pick, run through the SAME processor:

* naive: one event at a time (B = 1, one poll record per batch): a Redis read, a
  Redis write and an awaited produce per event.
* recompute: every event re-runs the model over the student's whole window, in the
  reference notebook's (64, 100) shape, instead of carrying the recurrent state.
  ``RecomputeWindow`` wraps a DKT so its "state" is the window itself; the processor
  stores and batches it like any model state.
* stream-kt: the incremental micro-batched path (carried (h, c), one LSTM step).
"""

from __future__ import annotations

import torch

from stream_kt.models.base import KTModel, State, StepOutput
from stream_kt.models.dkt import DKT

WINDOW = 100


class RecomputeWindow(KTModel):
    """DKT served by recomputation: the full (B, W) forward per event, the last output kept."""

    name = "recompute-window"

    def __init__(self, model: DKT, window: int = WINDOW) -> None:
        super().__init__(model.config)
        self.dkt = model
        self.window = window

    def initial_state(self, batch_size: int) -> State:
        return {
            "items": torch.zeros(batch_size, self.window),  # float32: the stream stores states as float32
            "correct": torch.zeros(batch_size, self.window),
            "length": torch.zeros(batch_size, 1),
        }

    def step(
        self, state: State, items: torch.Tensor, correct: torch.Tensor, times: torch.Tensor | None = None
    ) -> StepOutput:
        length = state["length"][:, 0].long()  # (B,)
        full = length >= self.window
        # append at position `length`, or shift left by one when the window is full
        window_items = torch.where(full.unsqueeze(1), state["items"].roll(-1, 1), state["items"])
        window_correct = torch.where(full.unsqueeze(1), state["correct"].roll(-1, 1), state["correct"])
        new_length = torch.clamp(length + 1, max=self.window)
        rows = torch.arange(items.shape[0])
        window_items[rows, new_length - 1] = items.float()
        window_correct[rows, new_length - 1] = correct.float()
        mask = torch.arange(self.window).unsqueeze(0) < new_length.unsqueeze(1)  # (B, W) post-padded
        hidden, _ = self.dkt.hidden_states(
            window_items.long(), window_correct.long(), mask
        )  # (B, W, H): the whole window again
        last = hidden[rows, new_length - 1]  # (B, H)
        before = torch.where(
            (new_length > 1).unsqueeze(1), hidden[rows, (new_length - 2).clamp(min=0)], torch.zeros_like(last)
        )
        weight = self.dkt.out.weight[items]
        p_correct = torch.sigmoid((before * weight).sum(-1) + self.dkt.out.bias[items])
        mastery = torch.sigmoid(self.dkt.out(last))
        return StepOutput(
            p_correct,
            {"items": window_items, "correct": window_correct, "length": new_length.unsqueeze(1).float()},
            mastery,
        )
