"""Fixed-shape step backends: the model's one-step update compiled for batch shape B.

Every backend takes any number of rows: fewer than B are padded up (padding rows are
masked: their outputs are dropped), more than B are split into chunks of B.  The
shape the model sees is always exactly (B, ...), the contract a compiled backend
(Neuron, CUDA graphs, a traced CPU module) relies on.
"""

from stream_kt.backends.base import BACKENDS, StepBackend, make_backend

__all__ = ["BACKENDS", "StepBackend", "make_backend"]
