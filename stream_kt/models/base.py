"""What every knowledge-tracing model offers the trainer, the evaluator and the stream.

Two paths that must agree:

* ``forward(batch)`` over whole (padded) sequences, used for training and offline
  evaluation: ``next_logits[b, t]`` predicts ``batch.next_correct[b, t]`` from the
  inputs at positions <= t only.
* ``step(state, items, correct, times)``: the incremental update the stream calls once
  per event, over a fixed batch of B students.  It returns the probability the student
  answers the given item correctly *before* the answer is applied, the new state, and
  the mastery vector (P(correct) for every item) after it.  Every model takes
  ``times`` (B, 2), [elapsed, lag] seconds of the event (None: unknown, as zeros); the
  time-aware ones (``uses_times``, SAINT+) read it, the others ignore it, so no caller
  asks which is which.  Models that ``takes_skill_sets`` also take items (B, K): an
  answer's skills padded with V; ``questions`` (B,) reach the ones that ``uses_questions``.

State is a dict of tensors whose first dimension is the batch (so rows can be stored
per student and stacked again), produced by ``initial_state``.

Models that can be distilled into (``stream-kt distill``) also offer
``loss_with_mastery(batch) -> (loss, mastery_logits)``: their own training loss and,
from the same pass (same dropout), the logit of every item after each interaction,
(B, T, V), the offline twin of the mastery ``step`` streams.  The distiller matches it
to a teacher's mastery; the model's loss stays the model's.

Time-aware models also read ``batch.times`` in ``forward``.

Defaults every model has, so callers never probe: ``extra_metrics`` (none),
``fitted_by_gradient`` (True: the trainer runs Adam on ``loss``; a model fitted its own
way, gbdt's boosting, says False and its fitter lives in ``training.fitters``),
``default_learning_rate`` (Adam's step size when the caller gives none: 1e-3, BKT's
few per-skill logits want 0.05), ``trainable_directly`` (True: ``train``, ``compare``
and ``distill`` may fit it from data; the ensemble says False and names in
``made_by`` how it is made instead) and ``distillable`` (whether it offers
``loss_with_mastery``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from stream_kt.data.batches import Batch
from stream_kt.data.vocab import EncodedSequence

State = dict[str, torch.Tensor]


@dataclass
class StepOutput:
    p_correct: torch.Tensor  # (B,) P(correct) of the answered item, predicted before seeing the answer
    state: State  # each (B, ...) after applying the answer
    mastery: torch.Tensor  # (B, V) P(correct) of every item at the next step


def next_answer_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean binary cross-entropy of (B, T) next-answer logits over scored (non-padded next-step) positions."""
    return nn.functional.binary_cross_entropy_with_logits(logits[batch.next_mask], batch.next_correct[batch.next_mask])


# Config fields added with skill sets and questions, after checkpoints of the models were saved: left out of
# config_dict (and so of the checkpoint's version) while at these values, so those checkpoints keep their
# version and still load
ADDED_FIELDS: dict[str, Any] = {"max_skills": 1, "num_questions": 0}


class KTModel(nn.Module):
    """Base class: subclasses set ``name`` and ``Config`` and implement the abstract methods."""

    name: ClassVar[str]
    Config: ClassVar[type]
    uses_times: bool = False  # its predictions read the events' times (step's times, forward's batch.times)
    fitted_by_gradient: ClassVar[bool] = True  # False: fitted its own way (training.fitters)
    default_learning_rate: ClassVar[float] = 1e-3  # Adam's step size unless the caller gives one
    trainable_directly: ClassVar[bool] = True  # False: not fitted from data on its own; made_by says how it is made
    made_by: ClassVar[str] = ""  # where trainable_directly is False: how to make one, for the refusal
    distillable: ClassVar[bool] = False  # True: offers loss_with_mastery
    takes_skill_sets: ClassVar[bool] = False  # True: items may be skill sets (..., K), Config has max_skills
    # True: reads question indices (batch.questions, step's questions), Config has num_questions
    uses_questions: ClassVar[bool] = False

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config  # the model's Config dataclass

    @classmethod
    def config_from(cls, saved: dict[str, Any]) -> Any:
        """The Config of a saved ``config_dict``."""
        return cls.Config(**saved)

    def config_dict(self) -> dict[str, Any]:
        """The Config as saved in a checkpoint and hashed into its version.  Fields added with skill sets and
        questions are left out at their "off" value, so a model of one skill an answer has the config (and the
        version) stream-kt gave it before them, and its earlier checkpoints still load."""
        return {k: v for k, v in asdict(self.config).items() if not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])}

    def forward(self, batch: Batch) -> torch.Tensor:  # (B, T) logits for next_correct
        raise NotImplementedError

    def loss(self, batch: Batch) -> torch.Tensor:
        return next_answer_loss(self(batch), batch)

    def initial_state(self, batch_size: int) -> State:
        raise NotImplementedError

    def step(
        self,
        state: State,
        items: torch.Tensor,
        correct: torch.Tensor,
        times: torch.Tensor | None = None,
        questions: torch.Tensor | None = None,
    ) -> StepOutput:
        raise NotImplementedError

    @property
    def input_width(self) -> int:
        """K: the skills of one answer the model takes, (B, K) items when above 1."""
        return int(getattr(self.config, "max_skills", 1))

    @property
    def reads_questions(self) -> bool:
        """Whether this model's step takes question indices (a trailing positional input of its inference module)."""
        return bool(getattr(self.config, "num_questions", 0))

    def parameter_groups(self, learning_rate: float) -> list[dict[str, Any]]:
        """Adam's parameter groups at step size ``learning_rate``: one, unless a model steps some parameters faster."""
        return [{"params": list(self.parameters()), "lr": learning_rate}]

    def loss_with_mastery(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, (B, T, V) mastery logits) from one pass: only models with ``distillable`` offer it."""
        raise NotImplementedError(f"{self.name} offers no per-step mastery logits to distil into")

    def extra_metrics(self, sequences: Sequence[EncodedSequence]) -> dict[str, float]:
        """Scores of its own on held-out students beyond next-answer prediction (DKT+: consistency); none by default."""
        return {}

    def inference_module(self, state_names: list[str]) -> nn.Module:
        """The one-step update as a module of positional tensors, for fixed-shape backends.

        ``(*state in state_names order, items, correct, times[, questions]) -> (p_correct, *state, mastery)``:
        items (B,) or (B, K) skill sets (``input_width``), questions (B,) where ``reads_questions``.
        Models may return a faster equivalent (DKT folds its embedding into the LSTM's
        input gates); the backend parity tests hold every one to eager ``step``.
        """
        return StepModule(self, state_names)


class StepModule(nn.Module):
    """Generic positional wrapper around ``KTModel.step`` (traceable)."""

    def __init__(self, model: KTModel, state_names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.state_names = list(state_names)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        questions = inputs[-1] if self.model.reads_questions else None
        *state, items, correct, times = inputs[:-1] if self.model.reads_questions else inputs
        step = self.model.step
        out = (
            step(dict(zip(self.state_names, state)), items, correct, times)
            if questions is None
            else step(dict(zip(self.state_names, state)), items, correct, times, questions)
        )
        return (out.p_correct, *(out.state[k] for k in self.state_names), out.mastery)
