"""How models that are not trained by gradient descent are fitted, looked up by model class.

A model says it is fitted its own way (``KTModel.fitted_by_gradient = False``); its
fitting routine lives in training and registers here.  ``fit`` returns the fitted
model and its training metrics (``best_epoch``, ``history``, and ``valid_auc`` when it
stopped on the validation students); ``rounds`` fixes the rounds instead (a refit).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stream_kt.errors import ConfigError
from stream_kt.models import KTModel

# fitter(model, train, valid, seed=..., progress=..., rounds=...) -> (fitted model, metrics), for one model class
Fitter = Callable[..., tuple[KTModel, dict[str, Any]]]


FITTERS: dict[type[KTModel], Fitter] = {}


def register_fitter(model_class: type[KTModel], fitter: Fitter) -> None:
    FITTERS[model_class] = fitter


def fitter_of(model: KTModel) -> Fitter:
    from stream_kt.training import gbdt_fit  # noqa: F401  (registers the built-in fitters)

    try:
        return FITTERS[type(model)]
    except KeyError:
        raise ConfigError(
            f"{model.name} is not trained by gradient descent and no fitter is registered for it"
        ) from None
