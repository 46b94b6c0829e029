"""Training: LoRA with merge, the SP-aware sampler, (stage runners come with the training issue)."""
