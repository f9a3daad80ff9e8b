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

Questions with skill sets (``max_skills`` > 1; items (..., K) padded with V), the
"mean" rule: P(correct) of a question is the mean of its skills' P(correct), each from
that skill's own P(L), guess and slip; the answer then updates every skill of the set
as if the skill had been answered alone (its posterior conditioned on the observed
answer, then its learning transition), as pyBKT does with a multi-skill row copied
once per skill.  The mean, not the product ("conjunctive": every skill needed), since
with per-skill guess and slip a product makes every question harder the more skills
it is tagged with, which nothing fitted can undo, while the mean of a set of one skill
is that skill's prediction and stays in the range of the single-skill predictions; it
is also what DKT does with a set (mean of logits there).  Mastery stays one value per
skill.

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
from stream_kt.models.layout import set_mean

# starting values of the fit (typical fitted values on ASSISTments skills)
INITIAL = {"prior": 0.4, "learn": 0.1, "guess": 0.2, "slip": 0.1}
PROBABILITY_FLOOR = 1e-6  # keeps logits finite


@dataclass(frozen=True)
class BKTConfig:
    num_items: int  # V: one HMM per item (skill)
    max_guess: float = 0.5
    max_slip: float = 0.5
    max_skills: int = 1  # K: an answer's skills, (..., K) padded with num_items, when above 1


@register
class BKT(KTModel):
    name = "bkt"
    takes_skill_sets = True
    Config = BKTConfig
    # four logits per skill, each seen only on its skill's answers: 1e-3 barely moves them
    # (0.684 test AUC after 3 epochs on ASSISTments 2009)
    default_learning_rate = 0.05

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
    def _after_answer(
        p_known: torch.Tensor, correct: torch.Tensor, params: dict[str, torch.Tensor], skills: torch.Tensor
    ) -> torch.Tensor:
        """P(L) of the answered skills (B,) after conditioning on ``correct`` (B,) and one learning transition."""
        guess, slip, learn = params["guess"][skills], params["slip"][skills], params["learn"][skills]
        right = correct.to(p_known.dtype)
        # likelihood of the observed answer if known / if not known
        if_known = right * (1 - slip) + (1 - right) * slip
        if_unknown = right * guess + (1 - right) * (1 - guess)
        posterior = p_known * if_known / (p_known * if_known + (1 - p_known) * if_unknown)
        return posterior + (1 - posterior) * learn

    def _set_p_correct(
        self, p_known: torch.Tensor, params: dict[str, torch.Tensor], skills: torch.Tensor
    ) -> torch.Tensor:
        """P(correct) of skill sets (B, K) padded with V: the mean of their skills' P(correct) (the mean rule), (B,)."""
        valid = skills < self.config.num_items
        index = skills.masked_fill(~valid, 0)
        per_skill = self._p_correct(p_known.gather(1, index), params["guess"][index], params["slip"][index])  # (B, K)
        return set_mean(per_skill, valid)

    def _after_set(
        self, p_known: torch.Tensor, correct: torch.Tensor, params: dict[str, torch.Tensor], skills: torch.Tensor
    ) -> torch.Tensor:
        """P(L) of every skill (B, V) after the answer ``correct`` (B,) to skill sets (B, K): each skill of a set
        updated as if answered alone."""
        every = torch.arange(p_known.shape[1], device=p_known.device).expand_as(p_known)  # (B, V)
        member = (skills.unsqueeze(-1) == every.unsqueeze(1)).any(
            1
        )  # (B, V): the skill is in the set (padding V is no skill)
        return torch.where(member, self._after_answer(p_known, correct.unsqueeze(1), params, every), p_known)

    def forward(self, batch: Batch) -> torch.Tensor:
        if batch.items.dim() == 3:
            return self._forward_sets(batch)
        params = self.parameters_by_skill()
        batch_size, length = batch.items.shape
        p_known = params["prior"].expand(batch_size, -1)  # (B, V)
        next_p = []
        for t in range(length):  # the filter is sequential; each step is O(B)
            skills = batch.items[:, t]
            updated = self._after_answer(
                p_known.gather(1, skills.unsqueeze(1)).squeeze(1), batch.correct[:, t], params, skills
            )
            real = batch.mask[:, t].unsqueeze(1)  # (B, 1): padding leaves the state as it was
            p_known = torch.where(real, p_known.scatter(1, skills.unsqueeze(1), updated.unsqueeze(1)), p_known)
            asked = batch.next_items[:, t]
            next_p.append(
                self._p_correct(
                    p_known.gather(1, asked.unsqueeze(1)).squeeze(1), params["guess"][asked], params["slip"][asked]
                )
            )
        return _logit(torch.stack(next_p, 1))  # (B, T)

    def _forward_sets(self, batch: Batch) -> torch.Tensor:
        """``forward`` over skill sets (B, T, K)."""
        params = self.parameters_by_skill()
        batch_size, length, _ = batch.items.shape
        p_known = params["prior"].expand(batch_size, -1)  # (B, V)
        next_p = []
        for t in range(length):
            updated = self._after_set(p_known, batch.correct[:, t], params, batch.items[:, t])
            p_known = torch.where(batch.mask[:, t].unsqueeze(1), updated, p_known)  # padding leaves the state as it was
            next_p.append(self._set_p_correct(p_known, params, batch.next_items[:, t]))
        return _logit(torch.stack(next_p, 1))  # (B, T)

    def initial_state(self, batch_size: int) -> State:
        with torch.no_grad():
            return {"p_known": self.parameters_by_skill()["prior"].expand(batch_size, -1).clone()}

    def step(
        self,
        state: State,
        items: torch.Tensor,
        correct: torch.Tensor,
        times: torch.Tensor | None = None,
        questions: torch.Tensor | None = None,
    ) -> StepOutput:
        params = self.parameters_by_skill()
        p_known = state["p_known"]  # (B, V)
        if items.dim() == 2:  # skill sets (B, K)
            p_correct = self._set_p_correct(p_known, params, items)
            p_known = self._after_set(p_known, correct, params, items)
            return StepOutput(
                p_correct, {"p_known": p_known}, self._p_correct(p_known, params["guess"], params["slip"])
            )
        answered = p_known.gather(1, items.unsqueeze(1)).squeeze(1)  # (B,)
        p_correct = self._p_correct(answered, params["guess"][items], params["slip"][items])
        p_known = p_known.scatter(
            1, items.unsqueeze(1), self._after_answer(answered, correct, params, items).unsqueeze(1)
        )
        mastery = self._p_correct(p_known, params["guess"], params["slip"])  # (B, V)
        return StepOutput(p_correct, {"p_known": p_known}, mastery)


def _logit(p: torch.Tensor | float) -> torch.Tensor:  # a 0-d tensor for a float
    p = torch.as_tensor(p, dtype=torch.float32).clamp(PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    return torch.log(p) - torch.log1p(-p)
