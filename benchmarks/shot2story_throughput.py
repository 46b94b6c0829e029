"""Stage-5 throughput: videos/s for index + clip, clips/s for captioning with the longvila backend (tiny model).

For N synthetic Shot2Story-format videos (N = 8 and 32 by default), index + clip runs in a fresh process;
printed: videos/s and that process's peak resident memory (ru_maxrss), which should stay flat in N (nothing
is held per video but one row). Then the `longvila` captioner (tiny model, CPU, batch 8, 4 frames per clip,
4 new tokens) captions the first 32 clips: clips/s, model loading excluded.

    python benchmarks/shot2story_throughput.py [--videos 8 32]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

INDEX_AND_CLIP = """
import resource, sys, time
from pathlib import Path
from longvila.data.shot2story.common import Rejects
from longvila.data.shot2story.index import build_index, load_annotations
from longvila.data.shot2story.clips import clips_for_video
root = Path(sys.argv[1])
t0 = time.perf_counter()
rejects = Rejects("bench")
videos, _ = build_index(load_annotations(root / "annotations/20k_train.json", rejects), root, "videos", "shots",
                        rejects, workers=2)
clips = [c for v in videos for c in clips_for_video(v, "fixed", 10.0, 2.0)]
dt = time.perf_counter() - t0
print(len(videos), len(clips), dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=int, nargs="+", default=[8, 32])
    args = p.parse_args()
    from longvila.config.video import SynthConfig
    from longvila.data.shot2story.synth import build_synthetic

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"{'videos':>6} {'clips':>6} {'index+clip s':>12} {'videos/s':>9} {'peak RSS MiB':>12}")
        roots = {}
        for n in args.videos:
            roots[n] = tmp / f"d{n}"
            build_synthetic(SynthConfig(videos=n, seed=n), roots[n])
            out = subprocess.run([sys.executable, "-c", INDEX_AND_CLIP, str(roots[n])], capture_output=True, text=True,
                                 check=True, cwd=REPO).stdout.split()
            nv, nc, dt, rss = int(out[0]), int(out[1]), float(out[2]), int(out[3]) / 1024
            print(f"{nv:>6} {nc:>6} {dt:>12.2f} {nv / dt:>9.1f} {rss:>12.0f}", flush=True)
        caption_benchmark(tmp, roots[max(roots)])


def caption_benchmark(tmp: Path, root: Path) -> None:
    from longvila.config import load_config_file
    from longvila.config.video import CaptionConfig
    from longvila.data.shot2story.caption import clip_frame_indices
    from longvila.data.shot2story.clips import clips_for_video
    from longvila.data.shot2story.common import Rejects
    from longvila.data.shot2story.index import build_index, load_annotations
    from longvila.data.video import read_frames
    from longvila.infer.captioner import LongVILACaptioner
    from pipeline import init_model, resolve_config

    cfg = tmp / "config.yaml"
    resolve_config.main(["--from-yaml", str(REPO / "config.yaml"), "--out", str(cfg)])
    init_model.main(["--config", str(cfg), "--out", str(tmp / "tiny")])
    load_config_file(cfg)
    rejects = Rejects("bench")
    videos, _ = build_index(load_annotations(root / "annotations/20k_train.json", rejects), root, "videos", "shots",
                            rejects)
    clips = [c for v in videos for c in clips_for_video(v, "fixed", 10.0, 2.0)][:32]
    c = CaptionConfig(backend="longvila", frames_per_clip=4, batch=8, max_new_tokens=4)
    captioner = LongVILACaptioner(str(tmp / "tiny"), c)
    prompt = "Describe this clip."
    t0 = time.perf_counter()
    done = 0
    for start in range(0, len(clips), c.batch):
        batch = [((x, None), read_frames(root / x["path"], clip_frame_indices(x["start_frame"], x["end_frame"], 4)))
                 for x in clips[start:start + c.batch]]
        captions = []
        captioner.caption_batch(batch, prompt, lambda item, text: captions.append(text), None)
        done += len(captions)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"longvila captioner (tiny, CPU): {done} clips in {dt:.1f} s = {done / dt:.2f} clips/s "
          f"(decode + encode + generate; process peak RSS {peak:.0f} MiB)")


if __name__ == "__main__":
    main()
