"""One LSTM step written out equals nn.LSTM's over one time step."""

import pytest
import torch
from torch import nn

from stream_kt.models.recurrent import lstm_step


@pytest.mark.parametrize("layers", [1, 2])
def test_lstm_step_equals_nn_lstm_over_one_time_step(layers):
    torch.manual_seed(0)
    lstm = nn.LSTM(6, 5, num_layers=layers, batch_first=True).eval()
    x, h, c = torch.randn(4, 6), torch.randn(4, layers, 5), torch.randn(4, layers, 5)
    with torch.no_grad():
        output, (h_ref, c_ref) = lstm(x.unsqueeze(1), (h.transpose(0, 1).contiguous(), c.transpose(0, 1).contiguous()))
        new_h, new_c = lstm_step(lstm, x, h, c)
    assert new_h.shape == new_c.shape == (4, layers, 5)
    torch.testing.assert_close(new_h, h_ref.transpose(0, 1), atol=1e-6, rtol=0)
    torch.testing.assert_close(new_c, c_ref.transpose(0, 1), atol=1e-6, rtol=0)
    torch.testing.assert_close(new_h[:, -1], output[:, 0], atol=1e-6, rtol=0)
