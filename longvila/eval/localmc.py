"""`longvila_localmc`: a local lmms-eval task of multiple-choice questions about the workflow-made videos.

What: questions with four options (A-D, one right) about the offline Shot2Story-format videos of
longvila/data/shot2story/synth.py. Every shot there is a plain background with one to three moving shapes,
and its caption names colour, shape, count, direction and background ("Two red circles move from left to
right over a blue background."), so the right answer is known exactly; distractors come from the same
vocabularies (synth.COLOURS, synth.SHAPES, synth.MOTIONS). Shot questions show the shot's own file; the
"scenes" question shows the whole video.
Why: benchmark data (Video-MME, ...) cannot be downloaded here; this task runs the same lmms-eval path
(YAML task, doc_to_visual -> our model's generate_until -> process_results) offline.
How: `write_task(out, make_docs(records, ...))` writes the folder lmms-eval reads with --include_path:
    longvila_localmc.yaml    the task (dataset_path json, absolute data_files path, generate_until, accuracy)
    utils.py                 its hooks (source: longvila/eval/tasks/localmc_utils.py)
    longvila_localmc.jsonl   the docs

    docs = make_docs(load_val_records(root, ["20k_train.json"], val_videos), root, questions_per_video=4)
    write_task("results/make_bench_task", docs)
"""

from __future__ import annotations

import json
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from longvila.data.shot2story.synth import COLOURS, MOTIONS, NUMBERS, SHAPES

TASK_NAME = "longvila_localmc"
LETTERS = "ABCD"
QUESTION_TYPES = ("colour", "shape", "count", "background", "direction", "scenes")
EXTRA_SHAPES = ("star", "diamond")          # never drawn: distractors only (SHAPES has three)
COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
_CAPTION = re.compile(rf"^({'|'.join(NUMBERS.values())}) ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})s? "
                      rf"moves? ({'|'.join(map(re.escape, MOTIONS))}) over an? ({'|'.join(COLOURS)}) background\.$")

TASK_YAML = """\
# lmms-eval task written by longvila.eval.localmc.write_task: {num_docs} multiple-choice questions about the
# workflow-made videos (run: python -m lmms_eval --model longvila --tasks {task} --include_path <this folder>).
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data_file}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 8
  temperature: 0
  do_sample: false
process_results: !function utils.process_results
metric_list:
  - metric: accuracy
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
  chance: 0.25
"""


def parse_caption(caption: str) -> dict | None:
    """A synth shot caption -> {count, colour, shape, motion, background}; None for any other caption."""
    m = _CAPTION.match(caption.strip())
    if m is None:
        return None
    count = {v: k for k, v in NUMBERS.items()}[m.group(1)]
    return {"count": count, "colour": m.group(2), "shape": m.group(3), "motion": m.group(4), "background": m.group(5)}


def _choices(right: str, pool, rng: random.Random) -> tuple[list[str], str]:
    """Four shuffled options (the right one + three from `pool`) and the right option's letter."""
    options = [right] + rng.sample(sorted(set(pool) - {right}), 3)
    rng.shuffle(options)
    return [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)], LETTERS[options.index(right)]


def _shot_question(kind: str, shot: dict, rng: random.Random) -> tuple[str, list[str], str]:
    plural = shot["count"] > 1
    if kind == "colour":
        q = f"What colour {'are' if plural else 'is'} the moving shape{'s' * plural}?"
        return (q, *_choices(shot["colour"], COLOURS, rng))
    if kind == "shape":
        q = f"What shape {'are' if plural else 'is'} the moving object{'s' * plural}?"
        return (q, *_choices(shot["shape"], SHAPES + EXTRA_SHAPES, rng))
    if kind == "count":
        return ("How many shapes move in the video?", *_choices(COUNT_WORDS[shot["count"]], COUNT_WORDS.values(), rng))
    if kind == "background":
        return ("What colour is the background?", *_choices(shot["background"], COLOURS, rng))
    if kind == "direction":
        q = f"In which direction {'do' if plural else 'does'} the shape{'s' * plural} move?"
        return (q, *_choices(shot["motion"], MOTIONS, rng))
    raise AssertionError(kind)


def _scenes_question(num_shots: int, rng: random.Random) -> tuple[str, list[str], str]:
    pool = [str(n) for n in range(max(1, num_shots - 3), num_shots + 4)]
    return ("How many scenes does the video have?", *_choices(str(num_shots), pool, rng))


def make_docs(records: list[dict], video_path: Callable[[dict], Path], shot_path: Callable[[str], Path],
              questions_per_video: int, seed: int = 0) -> list[dict]:
    """Multiple-choice docs about Shot2Story-format records (see the module docstring).

    Args:
        records: annotation records (`nvid`, `video_names`, `captions`) of the videos to ask about.
        video_path: record -> its multi-shot video file; shot_path: a `video_names` entry -> the shot file.
        questions_per_video: questions per video, cycling through QUESTION_TYPES; shot questions rotate over
            the video's shots (whose captions parse and whose files exist).
        seed: seed of the shot choice, distractors and option order (deterministic).
    Returns:
        docs: {"id", "video", "question", "options", "answer", "question_type", "source"}, in record order.
    """
    rng = random.Random(seed)
    docs = []
    for rec in records:
        shots = [(name, parse_caption(cap)) for name, cap in zip(rec["video_names"], rec["captions"])]
        shots = [(shot_path(name), s) for name, s in shots if s is not None and shot_path(name).is_file()]
        first = rng.randrange(len(shots)) if shots else 0
        asked = 0
        for k in range(questions_per_video * len(QUESTION_TYPES)):
            if asked == questions_per_video:
                break
            kind = QUESTION_TYPES[k % len(QUESTION_TYPES)]
            if kind == "scenes" and (shots or asked == 0):
                video, (question, options, answer) = video_path(rec), _scenes_question(len(rec["captions"]), rng)
            elif shots and kind != "scenes":
                video, shot = shots[(first + asked) % len(shots)]
                question, options, answer = _shot_question(kind, shot, rng)
            else:
                continue
            docs.append({"id": f"{rec['nvid']}:{asked}:{kind}", "video": str(Path(video).resolve()),
                         "question": question, "options": options, "answer": answer, "question_type": kind,
                         "source": rec["nvid"]})
            asked += 1
    return docs


def load_val_records(root: str | Path, annotation_files: list[str], val_videos: set[str],
                     video_dir: str = "videos") -> list[dict]:
    """Annotation records whose video (`<video_dir>/<nvid>`, relative to `root`) is in `val_videos`; an
    annotation file is a path, or a name under `<root>/annotations` (as rule s2s_index reads them)."""
    out, seen = [], set()
    for name in annotation_files:
        path = Path(name) if Path(name).is_file() else Path(root) / "annotations" / name
        if not path.is_file():
            raise ValueError(f"annotation file {path} does not exist; check shot2story.annotations")
        for rec in json.loads(path.read_text(encoding="utf-8")):
            rel = f"{video_dir}/{rec['nvid']}"
            if rel in val_videos and rel not in seen:
                seen.add(rel)
                out.append(rec)
    return out


def write_task(out: str | Path, docs: list[dict], final_dir: str | Path | None = None) -> Path:
    """Write the task folder (YAML, utils.py, docs) into `out`; returns the YAML's path.

    Args:
        final_dir: where the folder will live when `out` is a temporary folder renamed afterwards; the YAML
            names the docs file by its absolute path there (lmms-eval resolves data_files from its cwd).
    """
    if not docs:
        raise ValueError(f"{TASK_NAME}: no questions to write; it needs validation videos made by the offline "
                         "Shot2Story set (shot2story.root: null, shot2story.val_fraction > 0, 2+ videos)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_file = Path(final_dir or out).resolve() / f"{TASK_NAME}.jsonl"
    (out / f"{TASK_NAME}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    shutil.copyfile(Path(__file__).parent / "tasks" / "localmc_utils.py", out / "utils.py")
    yaml_path = out / f"{TASK_NAME}.yaml"
    yaml_path.write_text(TASK_YAML.format(task=TASK_NAME, num_docs=len(docs), data_file=json.dumps(str(data_file))),
                         encoding="utf-8")
    return yaml_path
