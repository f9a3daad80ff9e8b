"""Sliding-window attention: the chunked band and the streamed window agree with a dense reference."""

import math

import pytest
import torch

from stream_kt.models.attention import WindowedAttention
from stream_kt.models.layout import gather_time, left_align_order, scatter_time


def dense_reference(attention, queries, keys, values, valid):
    """Plain T x T attention with an explicit band mask: query t sees valid keys t-W+1..t."""
    heads, window = attention.heads, attention.window
    batch, length, dim = queries.shape
    split = lambda x: x.view(batch, length, heads, dim // heads).transpose(1, 2)  # noqa: E731
    q, k, v = split(attention.query(queries)), split(attention.key(keys)), split(attention.value(values))
    scores = q @ k.transpose(-1, -2) / math.sqrt(dim // heads)  # (B, H, T, T)
    age = torch.arange(length).view(-1, 1) - torch.arange(length).view(1, -1)
    if attention.age_bias is not None:
        scores = scores + attention.age_bias[:, age.clamp(0, window - 1)]
    allowed = (age >= 0) & (age < window) & valid[:, None, None, :]
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1).nan_to_num(0.0)
    out = (weights @ v).transpose(1, 2).reshape(batch, length, dim)
    return attention.out(out)


@pytest.fixture(params=[True, False], ids=["age_bias", "no_positions"])
def attention(request):
    torch.manual_seed(0)
    module = WindowedAttention(dim=8, heads=2, window=5, age_bias=request.param)
    if module.age_bias is not None:
        torch.nn.init.normal_(module.age_bias)
    return module


@pytest.mark.parametrize("length", [3, 5, 17])  # shorter than, equal to, longer than the window
def test_band_matches_dense_reference(attention, length):
    torch.manual_seed(1)
    x = torch.randn(2, length, 8)
    valid = torch.ones(2, length, dtype=torch.bool)
    valid[1, length // 2 :] = False  # a shorter second row
    with torch.no_grad():
        got = attention.band(x, x, x, valid)
        expected = dense_reference(attention, x, x, x, valid)
    torch.testing.assert_close(got[valid], expected[valid], atol=1e-6, rtol=0)


def test_window_of_stored_slots_matches_the_band(attention):
    torch.manual_seed(2)
    x = torch.randn(1, 12, 8)
    valid = torch.ones(1, 12, dtype=torch.bool)
    with torch.no_grad():
        band = attention.band(x, x, x, valid)
        for t in range(12):
            slots = x[:, max(0, t - 4) : t + 1]  # the last W=5 positions, t included
            pad = 5 - slots.shape[1]
            stored = torch.cat([torch.zeros(1, pad, 8), slots], 1)
            stored_valid = torch.arange(5).view(1, -1) >= pad
            alone = attention.window_slots(x[:, t : t + 1], stored, stored, stored_valid)
            # the same query with its own position as the "own" slot and W-1 stored before it
            own = attention.window_slots(
                x[:, t : t + 1],
                stored[:, :-1],
                stored[:, :-1],
                stored_valid[:, :-1],
                own_keys=x[:, t : t + 1],
                own_values=x[:, t : t + 1],
            )
            torch.testing.assert_close(alone[0, 0], band[0, t], atol=1e-6, rtol=0)
            torch.testing.assert_close(own[0, 0], band[0, t], atol=1e-6, rtol=0)


def test_a_query_without_valid_keys_gets_zeros_not_nan(attention):
    x = torch.randn(1, 4, 8)
    with torch.no_grad():
        out = attention.window_slots(x[:, :1], x, x, torch.zeros(1, 4, dtype=torch.bool))
    torch.testing.assert_close(out, attention.out(torch.zeros(1, 1, 8)))


def test_left_align_round_trip_for_any_padding():
    mask = torch.tensor([[False, True, True, False, True], [True, True, False, False, False]])
    x = torch.arange(10.0).view(2, 5)
    order = left_align_order(mask)
    aligned = gather_time(x, order)
    assert aligned[0, :3].tolist() == [1.0, 2.0, 4.0] and aligned[1, :2].tolist() == [5.0, 6.0]
    torch.testing.assert_close(scatter_time(aligned, order), x)
