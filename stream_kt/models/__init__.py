"""Model registry: models are looked up by name, never dispatched on with if/elif."""

from __future__ import annotations

from stream_kt.errors import UnknownModelError
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


def build_model(name: str, **config) -> KTModel:
    cls = model_class(name)
    return cls(cls.Config(**config))


from stream_kt.models import bkt, dkt, dkt_plus, ensemble, gbdt, lastquery, saint, sakt  # noqa: E402,F401  (registers the built-in models)

__all__ = ["KTModel", "State", "StepOutput", "MODELS", "register", "model_class", "build_model"]
