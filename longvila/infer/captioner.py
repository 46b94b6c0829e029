"""The `longvila` caption backend of stage-5 data: our model captions batches of clips in one process.

`longvila.data.shot2story.caption.caption_clips` drives any captioner (`caption_batch(items, prompt, done,
failed)`); this one lives with inference so that the data package never imports a model runner:

    rows = caption_clips(clips, videos, root, cfg, cache, rejects, model_dir=ckpt,
                         make_captioner=lambda: LongVILACaptioner(ckpt, cfg))
"""

from __future__ import annotations

import numpy as np


class LongVILACaptioner:
    """Our model: the frames of a batch of clips go through the vision tower together."""

    def __init__(self, model_dir: str, cfg) -> None:
        from longvila.infer.single import load_for_inference

        self.model, self.tokenizer = load_for_inference(model_dir)
        self.cfg = cfg

    def caption_batch(self, items: list[tuple[object, np.ndarray]], prompt: str, done, failed) -> None:
        """Caption `items` ((item, frames uint8 [N,H,W,3]) pairs) and report each with `done(item, text)`."""
        from longvila.infer.single import answer_frames

        texts = answer_frames(self.model, self.tokenizer, prompt, [f for _, f in items], self.cfg.max_new_tokens)
        for (item, _), text in zip(items, texts, strict=True):
            done(item, text)
