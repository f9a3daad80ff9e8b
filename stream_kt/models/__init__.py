"""Model registry: models are looked up by name, never dispatched on with if/elif."""

from __future__ import annotations

import dataclasses
from typing import Any

from stream_kt.errors import ConfigError, UnknownModelError
from stream_kt.models.base import KTModel, State, StepOutput

MODELS: dict[str, type[KTModel]] = {}


def register(cls: type[KTModel]) -> type[KTModel]:
    MODELS[cls.name] = cls
    return cls


def model_class(name: str) -> type[KTModel]:
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}: choose one of {', '.join(sorted(MODELS))}") from None


def trainable_models() -> list[str]:
    """The models fitted from data on their own (``KTModel.trainable_directly``), sorted: what train,
    compare and distill offer."""
    return sorted(name for name, cls in MODELS.items() if cls.trainable_directly)


VOCABULARY_FIELDS = ("num_items", "max_skills", "num_questions")  # Config fields the vocabulary sets, never an option


def build_model(name: str, **config: Any) -> KTModel:
    cls = model_class(name)
    return cls(cls.Config(**config))


def vocabulary_fields(name: str, num_items: int, max_skills: int = 1, num_questions: int = 0) -> dict[str, int]:
    """The Config fields of model ``name`` that a vocabulary sets; ``ConfigError`` where the model cannot take it."""
    cls = model_class(name)
    fields: dict[str, int] = {"num_items": num_items}
    if max_skills > 1:
        if not cls.takes_skill_sets:
            raise ConfigError(
                f"{name} takes one skill per answer, not skill sets: use --skills combined or --skills first with it"
            )
        fields["max_skills"] = max_skills
    if num_questions:
        if not cls.uses_questions:
            raise ConfigError(f"{name} cannot use question ids: leave out --questions with it")
        fields["num_questions"] = num_questions
    return fields


def config_options(model: str, pairs: list[tuple[str, object]]) -> dict[str, object]:
    """``pairs`` (KEY, VALUE) checked against the model's Config fields and types: a bad one is one clear error."""
    fields = {f.name: f for f in dataclasses.fields(model_class(model).Config) if f.name not in VOCABULARY_FIELDS}
    options = {}
    for key, value in pairs:
        if key not in fields:
            raise ConfigError(f"model {model} has no option {key!r}: choose from {', '.join(sorted(fields))}")
        expected = type(fields[key].default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if expected is tuple and isinstance(value, list):  # JSON has lists only (an ensemble's members)
            value = tuple(value)
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise ConfigError(f"option {key} of model {model} expects {expected.__name__}, got {value!r}")
        options[key] = value
    return options


from stream_kt.models import bkt, dkt, dkt_plus, ensemble, gbdt, lastquery, saint, sakt  # noqa: E402,F401  (registers the built-in models)

__all__ = [
    "KTModel",
    "State",
    "StepOutput",
    "MODELS",
    "register",
    "model_class",
    "trainable_models",
    "build_model",
    "config_options",
    "vocabulary_fields",
]
