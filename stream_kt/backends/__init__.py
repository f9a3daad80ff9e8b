"""Fixed-shape step backends: the model's one-step update compiled for batch shape B.

``make_backend(name, model, B)`` with name auto | eager | cpu | cuda | neuron.  Every
backend takes any number of rows: fewer than B are padded up (their outputs dropped),
more than B are split into chunks of B.  The model always sees exactly (B, ...).
"""

from stream_kt.backends import compiled  # noqa: F401  (registers the backends)
from stream_kt.backends.base import BACKENDS, StepBackend, available_backends, make_backend, resolve_backend_name

BACKEND_CHOICES = ("auto", *BACKENDS)  # auto: the best available (resolve_backend_name)

__all__ = ["BACKENDS", "BACKEND_CHOICES", "StepBackend", "available_backends", "make_backend", "resolve_backend_name"]
