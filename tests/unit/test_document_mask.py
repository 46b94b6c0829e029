"""Stage 4's document mask: in a packed row, each document attends only to itself (boundaries after the EOS)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from longvila.model import build_config
from longvila.parallel import ParallelDims
from longvila.parallel.parallelize import apply_sequence_parallel
from longvila.train.engine import document_bounds, lm_loss

SEP = 7


@pytest.mark.parametrize("row, bounds", [
    ([1, 2, SEP, 3, 4, 5, SEP, 6], [0, 3, 7, 8]),      # a row that ends mid-document
    ([1, SEP, 2, SEP], [0, 2, 4]),                     # a separator last: no empty document
    ([SEP, SEP, 1], [0, 1, 2, 3]),
    ([1, 2, 3], [0, 3]),                               # no separator: one document
])
def test_document_bounds(row, bounds):
    got = document_bounds(torch.tensor(row), SEP)
    assert got.dtype == torch.int32 and got.tolist() == bounds


def test_masked_row_loss_equals_each_document_alone():
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = build_config("tiny").llm_config()
    cfg.vocab_size = 256
    alone = Qwen2ForCausalLM(cfg).double().eval()
    packed = Qwen2ForCausalLM(cfg).double().eval()
    packed.load_state_dict(alone.state_dict())
    dims = ParallelDims(world_size=1)
    apply_sequence_parallel(packed, dims)
    docs = [torch.randint(8, 256, (n,), generator=torch.Generator().manual_seed(n)) for n in (11, 6, 9)]
    row = torch.cat([docs[0], torch.tensor([SEP]), docs[1], torch.tensor([SEP]), docs[2]])
    with torch.no_grad():
        masked, tokens = lm_loss(packed, row, dims, separator=SEP)
        whole, _ = lm_loss(packed, row, dims)
        # each document run alone (its own positions from 0: RoPE is relative, so the logits are the same)
        pieces = [torch.cat([docs[0], torch.tensor([SEP])]), torch.cat([docs[1], torch.tensor([SEP])]), docs[2]]
        logits = torch.cat([alone(input_ids=p[None]).logits[0] for p in pieces])
        expected = F.cross_entropy(logits[:-1], row[1:])
    assert int(tokens) == len(row) - 1
    assert abs(masked - expected) < 1e-6                       # RoPE tables are fp32: shifted positions round
    assert abs(whole - expected) > 1e-3                       # without the mask, later documents see earlier ones


def test_a_separator_without_the_sp_attention_is_refused():
    # Transformers' own attention would drop the bounds and train on the unmasked row without a word
    from transformers import Qwen2ForCausalLM

    cfg = build_config("tiny").llm_config()
    cfg.vocab_size = 256
    with pytest.raises(ValueError, match="apply_sequence_parallel"):
        lm_loss(Qwen2ForCausalLM(cfg), torch.tensor([1, 2, SEP, 3]), ParallelDims(world_size=1), separator=SEP)
