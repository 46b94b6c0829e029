"""The vision-to-language projector (`mm_projector/`), with the release's `mlp_downsample` exactly.

Shapes: N frames, P = h*h patches (row-major), C vision channels, D LLM hidden size.

`mlp_downsample` (LONGVILA.md section 3.3):
  1. [N, P, C] -> [N, h, h, C]; an odd h gets one zero row at the bottom, then one zero column at the right.
  2. 2x2 space-to-channel: the token of block (i, j) concatenates x[2i, 2j], x[2i, 2j+1], x[2i+1, 2j],
     x[2i+1, 2j+1] (top-left, top-right, bottom-left, bottom-right) -> 4C channels.
  3. Tokens in block order `token_order`, a property of the checkpoint: "row" (t = i * (h/2) + j) is what the
     code released with the Qwen2 LongVILA checkpoints (2024-12) and every later revision computes, and what
     `mlp_downsample_2x2_fix` computes; "column" (t = j * (h/2) + i) is the first LongVILA code (2024-08, the
     Llama-3 checkpoints). A model fed the other order sees each frame transposed.
  4. LayerNorm(4C) -> Linear(4C, D) -> GELU -> Linear(D, D).

The module is the release's `nn.Sequential(DownSampleBlock(), LayerNorm, Linear, GELU, Linear)`: the
parameter-free block sits at index 0, so the weights are `layers.1.*` (LayerNorm), `layers.2.*`, `layers.4.*`,
the key names of a released `mm_projector/model.safetensors`. Files that longvila wrote before it followed
the release (`layers.0/1/3`, column order) are read by `upgrade_legacy_state`.
"""

from __future__ import annotations

import torch
from torch import nn

from longvila.shapes import downsampled_tokens

PROJECTOR_TYPES = ("mlp_downsample", "mlp_downsample_2x2_fix", "mlp2x_gelu", "linear")
DOWNSAMPLE_TYPES = ("mlp_downsample", "mlp_downsample_2x2_fix")
TOKEN_ORDERS = ("row", "column")
DEFAULT_TOKEN_ORDER = "row"  # what `token_order` absent from a checkpoint means (the 2024-12 release and later)
# longvila's own files before it followed the release: Sequential(LayerNorm, Linear, GELU, Linear), column order
_LEGACY_KEYS = {"layers.0": "layers.1", "layers.1": "layers.2", "layers.3": "layers.4"}


def check_token_order(token_order: str, projector_type: str = "mlp_downsample", where: str = "token_order") -> None:
    """ValueError naming `where` unless `token_order` is valid for `projector_type`."""
    if token_order not in TOKEN_ORDERS:
        raise ValueError(f"{where} = {token_order!r}; use 'row' (Qwen2 LongVILA checkpoints, 2024-12 and later) or "
                         "'column' (the 2024-08 Llama-3 LongVILA code)")
    if token_order == "column" and projector_type == "mlp_downsample_2x2_fix":
        raise ValueError(f"{where} = 'column' with mm_projector_type 'mlp_downsample_2x2_fix', which is row-major "
                         "by definition; use 'row' or mm_projector_type 'mlp_downsample'")


def flat_square_2x2(x_NPC: torch.Tensor, token_order: str = DEFAULT_TOKEN_ORDER) -> torch.Tensor:
    """[N, h*h, C] -> [N, ceil(h/2)^2, 4C]: zero-pad odd grids, 2x2 space-to-channel, blocks in `token_order`."""
    check_token_order(token_order)
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
    # [n, row-block i, dy, col-block j, dx, c]; channels are (dy, dx) = TL TR BL BR
    x = x.reshape(n, b, 2, b, 2, c)
    blocks = (0, 1, 3, 2, 4, 5) if token_order == "row" else (0, 3, 1, 2, 4, 5)   # [n, i, j, ...] or [n, j, i, ...]
    return x.permute(*blocks).reshape(n, b * b, 4 * c)


class DownSample2x2(nn.Module):
    """The parameter-free first layer of `mlp_downsample`: [N, h*h, C] -> [N, ceil(h/2)^2, 4C]."""

    def __init__(self, token_order: str = DEFAULT_TOKEN_ORDER) -> None:
        super().__init__()
        check_token_order(token_order)
        self.token_order = token_order

    def forward(self, x_NPC: torch.Tensor) -> torch.Tensor:
        return flat_square_2x2(x_NPC, self.token_order)

    def extra_repr(self) -> str:
        return f"token_order={self.token_order!r}"


def upgrade_legacy_state(state: dict) -> tuple[dict, bool]:
    """(state dict under the release's key names, whether it was longvila's legacy `layers.0/1/3` layout).

    The legacy layout is recognised by `layers.3.*` (the second Linear, which the release keeps at index 4)."""
    if not any(k.startswith("layers.3.") for k in state) or any(k.startswith("layers.4.") for k in state):
        return state, False
    out = {}
    for key, value in state.items():
        head, _, leaf = key.rpartition(".")
        out[f"{_LEGACY_KEYS.get(head, head)}.{leaf}"] = value
    return out, True


class MultimodalProjector(nn.Module):
    """Projects vision features [N, P, C] to LLM embeddings [N, T, D] (T = P for MLPs, ceil(h/2)^2 downsampled).

    Args:
        projector_type: one of PROJECTOR_TYPES.
        vision_hidden: C, the vision tower's hidden size.
        llm_hidden: D, the LLM's hidden size.
        token_order: "row" or "column", the block order of the downsampling types (see the module docstring).
    """

    def __init__(self, projector_type: str, vision_hidden: int, llm_hidden: int,
                 token_order: str = DEFAULT_TOKEN_ORDER) -> None:
        super().__init__()
        if projector_type not in PROJECTOR_TYPES:
            raise ValueError(f"unknown mm_projector_type {projector_type!r}; known: {', '.join(PROJECTOR_TYPES)}")
        check_token_order(token_order, projector_type)
        self.projector_type = projector_type
        self.token_order = token_order
        if projector_type in DOWNSAMPLE_TYPES:
            c4 = 4 * vision_hidden
            self.layers = nn.Sequential(DownSample2x2(token_order), nn.LayerNorm(c4), nn.Linear(c4, llm_hidden),
                                        nn.GELU(), nn.Linear(llm_hidden, llm_hidden))
        elif projector_type == "mlp2x_gelu":
            self.layers = nn.Sequential(nn.Linear(vision_hidden, llm_hidden), nn.GELU(),
                                        nn.Linear(llm_hidden, llm_hidden))
        else:
            self.layers = nn.Linear(vision_hidden, llm_hidden)

    def tokens_per_frame(self, num_patches: int) -> int:
        return downsampled_tokens(num_patches) if self.projector_type in DOWNSAMPLE_TYPES else num_patches

    def config_dict(self, dtype: torch.dtype) -> dict:
        """`mm_projector/config.json` as the release writes it, plus `token_order` (always written)."""
        return {"architectures": ["MultimodalProjector"], "mm_projector_type": self.projector_type,
                "model_type": "v2l_projector", "token_order": self.token_order,
                "torch_dtype": str(dtype).replace("torch.", "")}

    def forward(self, x_NPC: torch.Tensor) -> torch.Tensor:
        return self.layers(x_NPC)
