"""The mlp_downsample projector against a loop-by-loop reference of LONGVILA.md section 3.3, both token orders."""

from __future__ import annotations

import pytest
import torch

from longvila.model.projector import MultimodalProjector, flat_square_2x2, upgrade_legacy_state


def reference_downsample(x, h, order="row"):
    """Explicit loops: pad bottom row then right column, blocks in row- or column-major order, TL TR BL BR."""
    n, _, c = x.shape
    grid = x.reshape(n, h, h, c)
    hp = h + (h % 2)
    padded = torch.zeros(n, hp, hp, c, dtype=x.dtype)
    padded[:, :h, :h] = grid
    b = hp // 2
    out = torch.zeros(n, b * b, 4 * c, dtype=x.dtype)
    for j in range(b):          # block column
        for i in range(b):      # block row
            t = i * b + j if order == "row" else j * b + i
            out[:, t] = torch.cat([padded[:, 2 * i, 2 * j], padded[:, 2 * i, 2 * j + 1],
                                   padded[:, 2 * i + 1, 2 * j], padded[:, 2 * i + 1, 2 * j + 1]], dim=-1)
    return out


@pytest.mark.parametrize("order", ["row", "column"])
@pytest.mark.parametrize("h", [2, 3, 4, 7, 27])
def test_downsample_matches_the_reference_exactly(h, order):
    x = torch.randn(2, h * h, 5, dtype=torch.float64)
    assert torch.equal(flat_square_2x2(x, order), reference_downsample(x, h, order))


def test_default_order_is_row_major():
    # 4x4 grid whose value is its row-major patch index: token 1 is block (row 0, col 1) -> patches 2, 3, 6, 7
    x = torch.arange(16, dtype=torch.float32).reshape(1, 16, 1)
    assert flat_square_2x2(x)[0].tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    assert flat_square_2x2(x, "column")[0].tolist() == [[0, 1, 4, 5], [8, 9, 12, 13], [2, 3, 6, 7],
                                                        [10, 11, 14, 15]]


def test_odd_grid_pads_bottom_then_right_with_zeros_both_orders():
    # LONGVILA.md 3.3's 3x3 example (values 1..9, 0 = padding), as the 2024-12 and the 2024-08 code give it
    x = torch.arange(1, 10, dtype=torch.float32).reshape(1, 9, 1)
    assert flat_square_2x2(x, "row")[0].tolist() == [[1, 2, 4, 5], [3, 0, 6, 0], [7, 8, 0, 0], [9, 0, 0, 0]]
    assert flat_square_2x2(x, "column")[0].tolist() == [[1, 2, 4, 5], [7, 8, 0, 0], [3, 0, 6, 0], [9, 0, 0, 0]]


def test_token_order_is_validated():
    with pytest.raises(ValueError, match="token_order = 'diagonal'; use 'row'"):
        MultimodalProjector("mlp_downsample", 8, 16, token_order="diagonal")
    with pytest.raises(ValueError, match="row-major by definition"):
        MultimodalProjector("mlp_downsample_2x2_fix", 8, 16, token_order="column")


def test_legacy_state_is_upgraded_to_the_release_keys():
    legacy = {"layers.0.weight": torch.ones(32), "layers.0.bias": torch.zeros(32), "layers.1.weight": torch.ones(16, 32),
              "layers.1.bias": torch.zeros(16), "layers.3.weight": torch.ones(16, 16), "layers.3.bias": torch.zeros(16)}
    state, was_legacy = upgrade_legacy_state(legacy)
    assert was_legacy and sorted(state) == sorted(MultimodalProjector("mlp_downsample", 8, 16).state_dict())
    again, was_legacy = upgrade_legacy_state(state)
    assert not was_legacy and again is state


@pytest.mark.parametrize("llm_hidden, expected", [
    (1536, 4608 * 1536 + 1536 + 1536 * 1536 + 1536 + 2 * 4608),   # Qwen2-1.5B: the released 18.9 MB bf16 file
    (3584, 4608 * 3584 + 3584 + 3584 * 3584 + 3584 + 2 * 4608),   # Qwen2-7B: ~29.4M
])
def test_parameter_count_matches_the_release(llm_hidden, expected):
    proj = MultimodalProjector("mlp_downsample", 1152, llm_hidden)
    assert sum(p.numel() for p in proj.parameters()) == expected
    # the release's Sequential(DownSampleBlock(), LayerNorm, Linear, GELU, Linear): the block holds index 0
    assert sorted(proj.state_dict()) == ["layers.1.bias", "layers.1.weight", "layers.2.bias", "layers.2.weight",
                                         "layers.4.bias", "layers.4.weight"]
    if llm_hidden == 1536:
        assert abs(expected * 2 / 1e6 - 18.9) < 0.1


def test_tokens_per_frame():
    proj = MultimodalProjector("mlp_downsample", 8, 16)
    assert proj.tokens_per_frame(27 * 27) == 196 and proj.tokens_per_frame(32 * 32) == 256
    assert proj(torch.randn(3, 49, 8)).shape == (3, 16, 16)


def test_unknown_projector_type_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown mm_projector_type 'mlp_downsample_fix'; known: mlp_downsample,"):
        MultimodalProjector("mlp_downsample_fix", 8, 16)
