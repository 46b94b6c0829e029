"""Capacity planning before anything is submitted (issue 9): how much memory one rank needs for a model,
a sequence length, a Ulysses x ring x data-parallel split and a ZeRO stage. Torch-free arithmetic.

    from longvila.plan.memory import rank_memory
    rank_memory(llm_shape("qwen2-7b-384"), seq_len=2_097_152, ulysses=8, ring=32, world=256, zero=3)
"""
