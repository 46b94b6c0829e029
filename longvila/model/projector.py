"""The vision-to-language projector (`mm_projector/`), with the release's `mlp_downsample` exactly.

Shapes: N frames, P = h*h patches (row-major), C vision channels, D LLM hidden size.

`mlp_downsample` (LONGVILA.md section 3.3):
  1. [N, P, C] -> [N, h, h, C]; an odd h gets one zero row at the bottom, then one zero column at the right.
  2. 2x2 space-to-channel: the token of block (i, j) concatenates x[2i, 2j], x[2i, 2j+1], x[2i+1, 2j],
     x[2i+1, 2j+1] (top-left, top-right, bottom-left, bottom-right) -> 4C channels.
  3. Tokens in the release's COLUMN-major block order: t = j * (h/2) + i. Released LLMs were trained on this
     order; a row-major order would feed them a transposed image.
  4. LayerNorm(4C) -> Linear(4C, D) -> GELU -> Linear(D, D).
Parameter names match the release's `mm_projector/model.safetensors` (`layers.0` ... `layers.3`).
"""

from __future__ import annotations

import torch
from torch import nn

from longvila.shapes import downsampled_tokens

PROJECTOR_TYPES = ("mlp_downsample", "mlp_downsample_2x2_fix", "mlp2x_gelu", "linear")
DOWNSAMPLE_TYPES = ("mlp_downsample", "mlp_downsample_2x2_fix")


def flat_square_2x2(x_NPC: torch.Tensor) -> torch.Tensor:
    """[N, h*h, C] -> [N, ceil(h/2)^2, 4C]: zero-pad odd grids, 2x2 space-to-channel, column-major blocks."""
    n, p, c = x_NPC.shape
    h = int(round(p ** 0.5))
    if h * h != p:
        raise ValueError(f"mlp_downsample needs a square patch grid, got {p} patches")
    x = x_NPC.reshape(n, h, h, c)
    if h % 2:
        x = torch.cat([x, x.new_zeros(n, 1, h, c)], dim=1)       # bottom row
        x = torch.cat([x, x.new_zeros(n, h + 1, 1, c)], dim=2)   # right column
        h += 1
    b = h // 2
    # [n, row-block i, dy, col-block j, dx, c] -> [n, j, i, dy, dx, c]: column-major blocks, TL TR BL BR channels
    x = x.reshape(n, b, 2, b, 2, c).permute(0, 3, 1, 2, 4, 5)
    return x.reshape(n, b * b, 4 * c)


class MultimodalProjector(nn.Module):
    """Projects vision features [N, P, C] to LLM embeddings [N, T, D] (T = P for MLPs, ceil(h/2)^2 downsampled).

    Args:
        projector_type: one of PROJECTOR_TYPES.
        vision_hidden: C, the vision tower's hidden size.
        llm_hidden: D, the LLM's hidden size.
    """

    def __init__(self, projector_type: str, vision_hidden: int, llm_hidden: int) -> None:
        super().__init__()
        if projector_type not in PROJECTOR_TYPES:
            raise ValueError(f"unknown mm_projector_type {projector_type!r}; known: {', '.join(PROJECTOR_TYPES)}")
        self.projector_type = projector_type
        if projector_type in DOWNSAMPLE_TYPES:
            c4 = 4 * vision_hidden
            self.layers = nn.Sequential(nn.LayerNorm(c4), nn.Linear(c4, llm_hidden), nn.GELU(),
                                        nn.Linear(llm_hidden, llm_hidden))
        elif projector_type == "mlp2x_gelu":
            self.layers = nn.Sequential(nn.Linear(vision_hidden, llm_hidden), nn.GELU(),
                                        nn.Linear(llm_hidden, llm_hidden))
        else:
            self.layers = nn.Linear(vision_hidden, llm_hidden)

    def tokens_per_frame(self, num_patches: int) -> int:
        return downsampled_tokens(num_patches) if self.projector_type in DOWNSAMPLE_TYPES else num_patches

    def forward(self, x_NPC: torch.Tensor) -> torch.Tensor:
        if self.projector_type in DOWNSAMPLE_TYPES:
            x_NPC = flat_square_2x2(x_NPC)
        return self.layers(x_NPC)
