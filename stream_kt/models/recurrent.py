"""One time step of an ``nn.LSTM`` as plain matrix products, for the streaming step.

``nn.LSTM`` on a GPU runs cuDNN's RNN, which is built for long sequences: for one time
step it adds its own launches and workspace, and by default may use TF32 (cuDNN's
``allow_tf32``), which moves results by more than the 1e-4 a backend may differ from
eager.  One step of a (unidirectional, projection-free) LSTM is two matrix products
and a few pointwise ops per layer; written out, it is the same numbers on every
device and captures into a CUDA graph like any other kernel.  Inference only: the
dropout ``nn.LSTM`` applies between layers in training is not applied here.
"""

from __future__ import annotations

import torch
from torch import nn


def lstm_step(lstm: nn.LSTM, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``lstm`` over one time step: input x (B, I), state h, c (B, L, H) -> new h, c (B, L, H).

    Equals ``lstm(x.unsqueeze(1), (h.transpose(0, 1), c.transpose(0, 1)))``'s final
    state, batch first; the last layer's new h is also the step's output.
    """
    assert lstm.batch_first and not lstm.bidirectional and lstm.proj_size == 0, (
        "one-directional, batch-first, no projection"
    )
    new_h, new_c = [], []
    for layer in range(lstm.num_layers):
        weight_ih, weight_hh = getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}")
        gates = x @ weight_ih.T + h[:, layer] @ weight_hh.T  # (B, 4H), gate order i, f, g, o
        if lstm.bias:
            gates = gates + getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
        in_gate, forget_gate, cell_gate, out_gate = gates.chunk(4, 1)
        c1 = torch.sigmoid(forget_gate) * c[:, layer] + torch.sigmoid(in_gate) * torch.tanh(cell_gate)  # (B, H)
        x = torch.sigmoid(out_gate) * torch.tanh(c1)  # this layer's h is the next layer's input
        new_h.append(x)
        new_c.append(c1)
    return torch.stack(new_h, 1), torch.stack(new_c, 1)
