"""Window attention through torch's fused scaled_dot_product_attention equals the original SwinIR/HAT attention,
written out here as their code computes it (scaled q·kᵀ, bias, window mask, softmax, ·v), in fp32 on the CPU; the
stochastic-depth rates are torch.linspace's."""
from __future__ import annotations

import pytest
import torch

from models.window_blocks import StochasticDepthRates, WindowAttention, relative_position_index, shifted_window_mask

WINDOW, HEADS, DIM = 4, 3, 24


def original_attention(module: WindowAttention, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """SwinIR's WindowAttention.forward, step by step."""
    b_, n, c = x.shape
    qkv = module.qkv(x).reshape(b_, n, 3, module.num_heads, c // module.num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q * module.scale) @ k.transpose(-2, -1)
    bias = module.relative_position_bias_table[module.relative_position_index.view(-1)].view(n, n, -1)
    attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
    if mask is not None:
        windows = mask.shape[0]
        attn = attn.view(b_ // windows, windows, module.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, module.num_heads, n, n)
    attn = torch.softmax(attn, dim=-1)
    return module.proj((attn @ v).transpose(1, 2).reshape(b_, n, c))


@pytest.mark.parametrize("shifted", [False, True])
def test_fused_attention_equals_the_original_in_fp32(shifted):
    torch.manual_seed(0)
    module = WindowAttention(DIM, WINDOW, HEADS, own_index=True).eval()
    with torch.no_grad():
        module.relative_position_bias_table.normal_(std=1.0)  # a bias that matters, not the init's 0.02
    height, width, batch = 8, 12, 2
    mask = shifted_window_mask(height, width, WINDOW, WINDOW // 2) if shifted else None
    windows = (height // WINDOW) * (width // WINDOW)
    x = torch.randn(batch * windows, WINDOW * WINDOW, DIM)
    with torch.no_grad():
        ours = module(x, mask)
        ref = original_attention(module, x, mask)
    assert ours.dtype == torch.float32
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-6), (ours - ref).abs().max()


def test_a_shared_bias_index_gives_the_same_attention():
    """HAT passes the index in (`rpi`) instead of keeping its own."""
    torch.manual_seed(1)
    module = WindowAttention(DIM, WINDOW, HEADS, own_index=True).eval()
    x = torch.randn(3, WINDOW * WINDOW, DIM)
    with torch.no_grad():
        assert torch.equal(module(x), module(x, rpi=relative_position_index(WINDOW)))


@pytest.mark.parametrize("rate, blocks", [(0.1, 24), (0.2, 1), (0.0, 6)])
def test_stochastic_depth_rates_are_linspaces_and_slices_are_views(rate, blocks):
    rates = StochasticDepthRates(rate, blocks)
    expected = torch.linspace(0, rate, blocks).tolist()
    assert len(rates) == blocks and list(rates) == pytest.approx(expected, abs=1e-7)
    middle = rates[blocks // 3:blocks - 1]
    assert list(middle) == pytest.approx(expected[blocks // 3:blocks - 1], abs=1e-7)
    assert rates[-1] == pytest.approx(expected[-1]) and len(rates[blocks:]) == 0
    with pytest.raises(IndexError):
        rates[blocks]


def test_stochastic_depth_rates_of_a_huge_depth_cost_nothing_until_indexed():
    rates = StochasticDepthRates(0.1, 10 ** 12)
    assert rates[10 ** 12 - 1] == pytest.approx(0.1) and len(rates[5:10 ** 11]) == 10 ** 11 - 5
