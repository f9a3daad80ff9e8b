"""Bayesian Knowledge Tracing (Corbett & Anderson 1994), one two-state HMM per skill.

Each skill s has four parameters: ``prior`` P(L0) (known before any practice),
``learn`` P(T) (unknown -> known after an attempt), ``guess`` P(G) and ``slip`` P(S).
P(correct) = P(L)(1 - slip) + (1 - P(L)) guess.  After an answer on skill s, P(L) is
conditioned on it (Bayes) and then the learning transition applies; other skills are
untouched (BKT's skills are independent) and knowledge is never forgotten.

Fitting: the forward filter is differentiable, so the model trains with the same Adam
trainer and next-answer cross-entropy as the neural models (the filter's one-step
predictive likelihood is exactly the HMM likelihood EM maximises).  Parameters are
stored as logits; guess and slip are capped at ``max_guess`` / ``max_slip`` (0.5: a
"known" student must be likelier to answer right than an "unknown" one, otherwise the
two states swap meaning, the usual identifiability constraint).

State: ``p_known`` (B, V) float32, P(L) of every skill; the mastery vector is
P(correct) of every skill.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stream_kt.data.batches import Batch
from stream_kt.models import register
from stream_kt.models.base import KTModel, State, StepOutput

# starting values of the fit (typical fitted values on ASSISTments skills)
INITIAL = {"prior": 0.4, "learn": 0.1, "guess": 0.2, "slip": 0.1}
PROBABILITY_FLOOR = 1e-6  # keeps logits finite


@dataclass(frozen=True)
class BKTConfig:
    num_items: int  # V: one HMM per item (skill)
    max_guess: float = 0.5
    max_slip: float = 0.5


@register
class BKT(KTModel):
    name = "bkt"
    Config = BKTConfig
    default_learning_rate = 0.05  # four logits per skill, each seen only on its skill's answers: 1e-3 barely moves them (0.684 test AUC after 3 epochs on ASSISTments 2009)

    def __init__(self, config: BKTConfig) -> None:
        super().__init__(config)
        skills = config.num_items
        self.prior_logit = nn.Parameter(torch.full((skills,), float(_logit(INITIAL["prior"]))))
        self.learn_logit = nn.Parameter(torch.full((skills,), float(_logit(INITIAL["learn"]))))
        self.guess_logit = nn.Parameter(torch.full((skills,), float(_logit(INITIAL["guess"] / config.max_guess))))
        self.slip_logit = nn.Parameter(torch.full((skills,), float(_logit(INITIAL["slip"] / config.max_slip))))

    def parameters_by_skill(self) -> dict[str, torch.Tensor]:
        """prior, learn, guess, slip as probabilities, each (V,)."""
        return {
            "prior": torch.sigmoid(self.prior_logit),
            "learn": torch.sigmoid(self.learn_logit),
            "guess": self.config.max_guess * torch.sigmoid(self.guess_logit),
            "slip": self.config.max_slip * torch.sigmoid(self.slip_logit),
        }

    @staticmethod
    def _p_correct(p_known: torch.Tensor, guess: torch.Tensor, slip: torch.Tensor) -> torch.Tensor:
        return p_known * (1 - slip) + (1 - p_known) * guess

    @staticmethod
    def _after_answer(p_known: torch.Tensor, correct: torch.Tensor, params: dict[str, torch.Tensor], skills: torch.Tensor) -> torch.Tensor:
        """P(L) of the answered skills (B,) after conditioning on ``correct`` (B,) and one learning transition."""
        guess, slip, learn = params["guess"][skills], params["slip"][skills], params["learn"][skills]
        right = correct.to(p_known.dtype)
        # likelihood of the observed answer if known / if not known
        if_known = right * (1 - slip) + (1 - right) * slip
        if_unknown = right * guess + (1 - right) * (1 - guess)
        posterior = p_known * if_known / (p_known * if_known + (1 - p_known) * if_unknown)
        return posterior + (1 - posterior) * learn

    def forward(self, batch: Batch) -> torch.Tensor:
        params = self.parameters_by_skill()
        batch_size, length = batch.items.shape
        p_known = params["prior"].expand(batch_size, -1)  # (B, V)
        next_p = []
        for t in range(length):  # the filter is sequential; each step is O(B)
            skills = batch.items[:, t]
            updated = self._after_answer(p_known.gather(1, skills.unsqueeze(1)).squeeze(1), batch.correct[:, t], params, skills)
            real = batch.mask[:, t].unsqueeze(1)  # (B, 1): padding leaves the state as it was
            p_known = torch.where(real, p_known.scatter(1, skills.unsqueeze(1), updated.unsqueeze(1)), p_known)
            asked = batch.next_items[:, t]
            next_p.append(self._p_correct(p_known.gather(1, asked.unsqueeze(1)).squeeze(1), params["guess"][asked], params["slip"][asked]))
        return _logit(torch.stack(next_p, 1))  # (B, T)

    def initial_state(self, batch_size: int) -> State:
        with torch.no_grad():
            return {"p_known": self.parameters_by_skill()["prior"].expand(batch_size, -1).clone()}

    def step(self, state: State, items: torch.Tensor, correct: torch.Tensor, times: torch.Tensor | None = None, questions: torch.Tensor | None = None) -> StepOutput:
        params = self.parameters_by_skill()
        p_known = state["p_known"]  # (B, V)
        answered = p_known.gather(1, items.unsqueeze(1)).squeeze(1)  # (B,)
        p_correct = self._p_correct(answered, params["guess"][items], params["slip"][items])
        p_known = p_known.scatter(1, items.unsqueeze(1), self._after_answer(answered, correct, params, items).unsqueeze(1))
        mastery = self._p_correct(p_known, params["guess"], params["slip"])  # (B, V)
        return StepOutput(p_correct, {"p_known": p_known}, mastery)


def _logit(p: torch.Tensor | float) -> torch.Tensor:  # a 0-d tensor for a float
    p = torch.as_tensor(p, dtype=torch.float32).clamp(PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    return torch.log(p) - torch.log1p(-p)
