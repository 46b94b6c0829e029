"""The mlp_downsample projector against a loop-by-loop reference of LONGVILA.md section 3.3."""

from __future__ import annotations

import pytest
import torch

from longvila.model.projector import MultimodalProjector, flat_square_2x2


def reference_downsample(x, h):
    """Explicit loops: pad bottom row then right column, blocks in column-major order, TL TR BL BR channels."""
    n, _, c = x.shape
    grid = x.reshape(n, h, h, c)
    hp = h + (h % 2)
    padded = torch.zeros(n, hp, hp, c, dtype=x.dtype)
    padded[:, :h, :h] = grid
    b = hp // 2
    out = torch.zeros(n, b * b, 4 * c, dtype=x.dtype)
    for j in range(b):          # block column
        for i in range(b):      # block row
            t = j * b + i       # column-major
            out[:, t] = torch.cat([padded[:, 2 * i, 2 * j], padded[:, 2 * i, 2 * j + 1],
                                   padded[:, 2 * i + 1, 2 * j], padded[:, 2 * i + 1, 2 * j + 1]], dim=-1)
    return out


@pytest.mark.parametrize("h", [2, 3, 4, 7, 27])
def test_downsample_matches_the_reference_exactly(h):
    x = torch.randn(2, h * h, 5, dtype=torch.float64)
    assert torch.equal(flat_square_2x2(x), reference_downsample(x, h))


def test_order_is_column_major_not_row_major():
    # 4x4 grid whose value is its row-major patch index: token 1 must be block (row 1, col 0) -> patches 8, 9, 12, 13
    x = torch.arange(16, dtype=torch.float32).reshape(1, 16, 1)
    assert flat_square_2x2(x)[0, :, :].tolist() == [[0, 1, 4, 5], [8, 9, 12, 13], [2, 3, 6, 7], [10, 11, 14, 15]]


def test_odd_grid_pads_bottom_then_right_with_zeros():
    x = torch.arange(1, 10, dtype=torch.float32).reshape(1, 9, 1)  # 3x3, values 1..9
    assert flat_square_2x2(x)[0].tolist() == [[1, 2, 4, 5], [7, 8, 0, 0], [3, 0, 6, 0], [9, 0, 0, 0]]


@pytest.mark.parametrize("llm_hidden, expected", [
    (1536, 4608 * 1536 + 1536 + 1536 * 1536 + 1536 + 2 * 4608),   # Qwen2-1.5B: the released 18.9 MB bf16 file
    (3584, 4608 * 3584 + 3584 + 3584 * 3584 + 3584 + 2 * 4608),   # Qwen2-7B: ~29.4M
])
def test_parameter_count_matches_the_release(llm_hidden, expected):
    proj = MultimodalProjector("mlp_downsample", 1152, llm_hidden)
    assert sum(p.numel() for p in proj.parameters()) == expected
    assert sorted(proj.state_dict()) == ["layers.0.bias", "layers.0.weight", "layers.1.bias", "layers.1.weight",
                                         "layers.3.bias", "layers.3.weight"]
    if llm_hidden == 1536:
        assert abs(expected * 2 / 1e6 - 18.9) < 0.1


def test_tokens_per_frame():
    proj = MultimodalProjector("mlp_downsample", 8, 16)
    assert proj.tokens_per_frame(27 * 27) == 196 and proj.tokens_per_frame(32 * 32) == 256
    assert proj(torch.randn(3, 49, 8)).shape == (3, 16, 16)


def test_unknown_projector_type_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown mm_projector_type 'mlp_downsample_fix'; known: mlp_downsample,"):
        MultimodalProjector("mlp_downsample_fix", 8, 16)
