"""Ensemble: several knowledge-tracing models served as one, their probabilities averaged.

A member is any other registered model.  The ensemble's P(correct) for an answer is
the weighted mean of its members' P(correct) (equal weights unless ``weights`` says
otherwise), and its mastery vector the same mean of theirs, so it is exactly as honest
as its members: each member predicts step t+1 from steps <= t.

* Offline, ``forward`` runs every member over the batch and returns the logit of the
  mean probability (computed in log space, no overflow at saturated members).
* Streamed, the state is the union of the members' states, each name prefixed with
  the member's index (``0.h``, ``1.items``, ...), so one Redis row carries all of them
  and an event costs the sum of the members' one-step costs.
* It is not trained as one (``trainable_directly`` is False): its members are trained
  alone, each the way its model is (a gbdt boosts), and their checkpoints combined
  (``stream-kt ensemble``), keeping their weights.  That is also how diverse members
  (other seeds, windows, sizes) are combined.  ``loss`` still sums the members' own
  losses (DKT+ keeps its regularisers), never the loss of the mean.

Config: ``members`` is a tuple of ``{"model": name, **that model's Config fields}``
without ``num_items`` (the ensemble's vocabulary is every member's); ``weights`` one
non-negative weight per member, or empty for equal weights (``stream-kt ensemble
--fit-weights`` fits them on the members' validation students).

Skill sets: an ensemble takes them (``max_skills`` K > 1, items (..., K) padded with V)
when every member does; K reaches each member, and a member that takes one skill an
answer, or members of other widths, are refused in one line.  Each member treats a
set its own way; the ensemble averages their probabilities as for single items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from stream_kt.data.batches import Batch
from stream_kt.errors import ConfigError
from stream_kt.models import model_class, register
from stream_kt.models.base import KTModel, State, StepOutput


@dataclass(frozen=True)
class EnsembleConfig:
    num_items: int  # vocabulary size V, shared by every member
    members: tuple[dict[str, Any], ...] = ({"model": "dkt"}, {"model": "lastquery"})
    weights: tuple[float, ...] = ()  # one per member, normalised to sum 1; empty: equal
    max_skills: int = 1  # K: an answer's skills, (..., K) padded with num_items, when above 1; every member's


def mean_probability_logit(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """logit(sum_k weights[k] sigmoid(logits[k])) over the first dim, stable for any logit size (weights sum to 1)."""
    log_w = torch.log(weights).view(-1, *[1] * (logits.dim() - 1))  # a zero weight is -inf: that member drops out
    log_p = torch.logsumexp(nn.functional.logsigmoid(logits) + log_w, 0)
    log_q = torch.logsumexp(nn.functional.logsigmoid(-logits) + log_w, 0)
    return log_p - log_q


def weighted_mean(values: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    return (torch.stack(values) * weights.view(-1, *[1] * values[0].dim())).sum(0)


def _prefix(index: int) -> str:
    return f"{index}."


def member_state(state: State, index: int) -> State:
    """The rows of member ``index`` in an ensemble state, under the member's own names."""
    prefix = _prefix(index)
    return {name[len(prefix) :]: tensor for name, tensor in state.items() if name.startswith(prefix)}


@register
class Ensemble(KTModel):
    name = "ensemble"
    Config = EnsembleConfig
    trainable_directly = False
    takes_skill_sets = True  # when every member does: __init__ refuses the others
    made_by = "train its members, then combine their checkpoints with stream-kt ensemble"

    def __init__(self, config: EnsembleConfig) -> None:
        super().__init__(config)
        if not config.members:
            raise ConfigError("an ensemble needs at least one member")
        members = []
        for spec in config.members:
            options = dict(spec)
            name = options.pop("model", None)
            if name is None or name == self.name:
                raise ConfigError(f"ensemble member {spec!r}: give another model's name as 'model'")
            if "num_items" in options and options.pop("num_items") != config.num_items:
                raise ConfigError(
                    f"ensemble member {name}: its vocabulary size differs from the ensemble's {config.num_items}"
                )
            if options.get("max_skills", config.max_skills) != config.max_skills:
                raise ConfigError(
                    f"ensemble member {name}: takes {options['max_skills']} skills an answer, "
                    f"the ensemble {config.max_skills}"
                )
            if config.max_skills > 1:
                if not model_class(name).takes_skill_sets:
                    raise ConfigError(
                        f"ensemble member {name} takes one skill per answer, not skill sets: "
                        "an ensemble takes them when every member does"
                    )
                options["max_skills"] = config.max_skills
            try:
                member = model_class(name)
                members.append(member(member.config_from({"num_items": config.num_items, **options})))
            except TypeError as exc:  # a field the member's Config does not have
                raise ConfigError(f"ensemble member {name}: {exc}") from None
        questioned = sorted({member.name for member in members if member.reads_questions})
        if questioned:  # its step and serving module pass the members no question ids: they would stream otherwise
            raise ConfigError(
                f"ensemble members that read question ids ({', '.join(questioned)}) are not supported: "
                "train them without --questions"
            )
        self.members = nn.ModuleList(members)
        weights = tuple(config.weights) or (1.0,) * len(members)
        if len(weights) != len(members) or min(weights) < 0 or sum(weights) <= 0:
            raise ConfigError(
                f"ensemble weights {list(config.weights)}: give one non-negative weight per member "
                f"({len(members)}), not all zero"
            )
        # normalised, on the module's device; not in the state dict: the config holds them
        self.register_buffer("weights", torch.tensor(weights) / sum(weights), persistent=False)
        self.uses_times = any(member.uses_times for member in members)

    @classmethod
    def of(cls, models: Sequence[KTModel], weights: Sequence[float] = ()) -> Ensemble:
        """An ensemble of already trained models (their parameters copied), in eval mode."""
        sizes = {m.config.num_items for m in models}
        if len(sizes) > 1:
            raise ConfigError(f"ensemble members have different vocabulary sizes {sorted(sizes)}")
        widths = {m.input_width for m in models}
        if len(widths) > 1:
            raise ConfigError(
                f"ensemble members take different numbers of skills an answer {sorted(widths)}: "
                "train them on the same --skills"
            )
        specs = tuple(
            {"model": m.name, **{k: v for k, v in m.config_dict().items() if k != "num_items"}} for m in models
        )
        config = EnsembleConfig(
            num_items=sizes.pop() if sizes else 0,
            members=specs,
            weights=tuple(float(w) for w in weights),
            max_skills=widths.pop() if widths else 1,
        )
        ensemble = cls(config)
        for member, trained in zip(ensemble.members, models):
            member.load_state_dict(trained.state_dict())
        return ensemble.eval()

    def config_dict(self) -> dict[str, Any]:
        config = super().config_dict()
        if not config[
            "weights"
        ]:  # equal weights: left out, so ensembles saved before weights existed keep their version
            del config["weights"]
        return config

    weights: torch.Tensor  # a buffer

    @property
    def member_models(self) -> list[KTModel]:
        return cast("list[KTModel]", list(self.members))

    def forward(self, batch: Batch) -> torch.Tensor:
        return mean_probability_logit(torch.stack([member(batch) for member in self.member_models]), self.weights)

    def loss(self, batch: Batch) -> torch.Tensor:
        # each member learns on its own objective; the average is only formed to predict
        return torch.stack([member.loss(batch) for member in self.member_models]).sum()

    def initial_state(self, batch_size: int) -> State:
        return {
            _prefix(i) + name: tensor
            for i, member in enumerate(self.member_models)
            for name, tensor in member.initial_state(batch_size).items()
        }

    def step(
        self,
        state: State,
        items: torch.Tensor,
        correct: torch.Tensor,
        times: torch.Tensor | None = None,
        questions: torch.Tensor | None = None,
    ) -> StepOutput:
        outputs = [
            member.step(member_state(state, i), items, correct, times) for i, member in enumerate(self.member_models)
        ]
        new_state = {_prefix(i) + name: tensor for i, out in enumerate(outputs) for name, tensor in out.state.items()}
        return StepOutput(
            weighted_mean([out.p_correct for out in outputs], self.weights),
            new_state,
            weighted_mean([out.mastery for out in outputs], self.weights),
        )

    def inference_module(self, state_names: list[str]) -> nn.Module:
        return EnsembleInferenceStep(self, state_names)


class EnsembleInferenceStep(nn.Module):
    """Each member's own serving module (DKT's folded one included) on its slice of the state.

    Inputs and outputs as ``KTModel.inference_module``.
    """

    def __init__(self, model: Ensemble, state_names: list[str]) -> None:
        super().__init__()
        parts, positions = [], []
        for i, member in enumerate(model.member_models):
            names = sorted(member.initial_state(1))
            positions.append([state_names.index(_prefix(i) + name) for name in names])
            parts.append(member.inference_module(names))
        self.parts = nn.ModuleList(parts)
        self.positions = positions
        self.weights: torch.Tensor
        self.register_buffer("weights", model.weights.clone(), persistent=False)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        *state, items, correct, times = inputs
        new_state: list[torch.Tensor] = list(state)
        p_correct, mastery = [], []
        for part, positions in zip(self.parts, self.positions):
            p, *member_state_out, m = part(*(state[j] for j in positions), items, correct, times)
            for j, tensor in zip(positions, member_state_out):
                new_state[j] = tensor
            p_correct.append(p)
            mastery.append(m)
        return (weighted_mean(p_correct, self.weights), *new_state, weighted_mean(mastery, self.weights))
