"""The stage-5 training data set: VILA-format video conversations -> token ids, labels and frames.

Reads the JSON list the original trainer's LLaVADataset reads (`{"id", "video": <path relative to
media_dir>, "conversations": [{"from": "human", "value": "<video>\\n..."}, {"from": "gpt", ...}]}`, as
written by rule s2s_assemble), checks every record up front (an error names the record and the fix), and
yields, per record: Qwen2 ChatML `input_ids`, `labels` (answers + <|im_end|>; the rest -100) and
`frames` (uint8 [num_frames, H, W, 3], sampled uniformly over the whole video).

    ds = VilaVideoDataset("results/s2s_assemble/vila_train.json", media_dir, tokenizer, num_frames=16)
    item = ds[0]      # {"id", "input_ids", "labels", "frames", "frame_indices"}
"""

from __future__ import annotations

import json
from pathlib import Path


class VilaVideoDataset:
    """Map-style data set over a VILA-format JSON file (see the module docstring)."""

    def __init__(self, json_path, media_dir, tokenizer, num_frames: int = 16) -> None:
        """`json_path` / `media_dir`: one file and its media folder, or equal-length lists of them (a data
        mixture: the records of every file, in order, each with its own media folder)."""
        from longvila.model.conversation import add_media_tokens

        paths = [json_path] if isinstance(json_path, (str, Path)) else list(json_path)
        medias = [media_dir] if isinstance(media_dir, (str, Path)) else list(media_dir)
        if len(paths) != len(medias) or not paths:
            raise ValueError(f"{len(paths)} JSON files but {len(medias)} media folders: give one media folder per "
                             "JSON file")
        self.num_frames = num_frames
        self.records, self.media_dirs = [], []
        for path, media in zip(map(Path, paths), map(Path, medias)):
            self.path = path
            try:
                records = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise ValueError(f"{path}: not a readable VILA JSON list ({e})") from e
            if not isinstance(records, list):
                raise ValueError(f"{path}: expected a JSON list of records")
            for i, rec in enumerate(records):
                self._check(i, rec)
            self.records += records
            self.media_dirs += [media] * len(records)
        self.media_dir = Path(medias[0])
        add_media_tokens(tokenizer)
        self.tokenizer = tokenizer

    def _check(self, i: int, rec) -> None:
        where = f"{self.path} record {i}"
        if not isinstance(rec, dict) or not isinstance(rec.get("video"), str):
            raise ValueError(f"{where}: needs a 'video' path (relative to media_dir)")
        conv = rec.get("conversations")
        if not isinstance(conv, list) or len(conv) < 2 or not all(isinstance(t, dict) for t in conv) \
                or conv[0].get("from") != "human":
            raise ValueError(f"{where}: 'conversations' must be a list of turns starting with 'human'")
        if not all(t.get("from") in ("human", "gpt") and isinstance(t.get("value"), str) for t in conv):
            raise ValueError(f"{where}: every turn needs 'from' (human|gpt) and a string 'value'")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        from longvila.data.video import load_video_frames
        from longvila.model.conversation import tokenize_conversation

        rec = self.records[i]
        video = self.media_dirs[i] / rec["video"]
        frames, indices = load_video_frames(video, self.num_frames)
        tok = tokenize_conversation(self.tokenizer, rec, "video")
        return {"id": rec.get("id", str(i)), "input_ids": tok.input_ids, "labels": tok.labels, "frames": frames,
                "frame_indices": list(indices)}
