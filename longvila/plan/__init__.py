"""Capacity planning before anything is submitted (issue 9): how much memory one rank needs for a model,
a sequence length, a Ulysses x ring x data-parallel split and a training recipe (engine, precision,
checkpointing, frames), and what a split costs in communication and time. Torch-free arithmetic.
`longvila.plan.check.check_training` gates every training config on it (at DAG build and in the launchers).

    from longvila.plan.memory import Recipe, rank_memory
    rank_memory(llm_shape("qwen2-7b-384"), seq_len=2_097_152, ulysses=4, ring=64, world=256, recipe=Recipe(zero=3))
"""
