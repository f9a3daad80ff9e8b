"""How models that are not trained by gradient descent are fitted, looked up by model class.

A model says it is fitted its own way (``KTModel.fitted_by_gradient = False``); its
fitting routine lives in training and registers here.  ``fit`` returns the fitted
model and its training metrics (``best_epoch``, ``history``, and ``valid_auc`` when it
stopped on the validation students); ``rounds`` fixes the rounds instead (a refit).
"""

from __future__ import annotations

from typing import Protocol, Sequence

from stream_kt.data.vocab import EncodedSequence
from stream_kt.errors import ConfigError
from stream_kt.models import KTModel


class Fitter(Protocol):
    def __call__(self, model: KTModel, train: Sequence[EncodedSequence], valid: Sequence[EncodedSequence], seed: int = 0, progress: bool = True, rounds: int | None = None) -> tuple[KTModel, dict]: ...


FITTERS: dict[type[KTModel], Fitter] = {}


def register_fitter(model_class: type[KTModel], fitter: Fitter) -> None:
    FITTERS[model_class] = fitter


def fitter_of(model: KTModel) -> Fitter:
    from stream_kt.training import gbdt_fit  # noqa: F401  (registers the built-in fitters)

    try:
        return FITTERS[type(model)]
    except KeyError:
        raise ConfigError(f"{model.name} is not trained by gradient descent and no fitter is registered for it") from None
