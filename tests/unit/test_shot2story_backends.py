"""Stage-5 model backends against real servers and models: `longvila serve` (the tiny model, real HTTP) for the
openai captioner and QA writer, retries on a flaky server, the transformers QA backend, the longvila
captioner, resume of a killed captioning run, and the VILA JSON in our stage-5 data set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from longvila.config.video import CaptionConfig, EndpointConfig, QAConfig, SynthConfig
from longvila.data.shot2story.assemble import sft_rows, write_vila_json
from longvila.data.shot2story.caption import caption_clips, read_prompt
from longvila.data.shot2story.clips import clips_for_video
from longvila.data.shot2story.common import Rejects
from longvila.data.shot2story.endpoint import ChatClient, EndpointConfigError, EndpointError, user_message
from longvila.data.shot2story.index import build_index, load_annotations
from longvila.data.shot2story.qa import generate_qa, template_qa
from longvila.data.shot2story.synth import build_synthetic
from tests.conftest import REPO

SMALL = SynthConfig(videos=2, min_shots=2, max_shots=3, min_shot_seconds=2.0, max_shot_seconds=3.0, fps=2, seed=5)


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_ckpt):
    """A tiny checkpoint, a small Shot2Story-format set, its index and clips, and a served model."""
    tmp = tmp_path_factory.mktemp("backends")
    cfg = tiny_ckpt.parent / "config.yaml"
    build_synthetic(SMALL, tmp / "data")
    rejects = Rejects("index")
    videos, _ = build_index(load_annotations(tmp / "data/annotations" / SMALL.annotation_file, rejects),
                            tmp / "data", "videos", "shots", rejects)
    clips = [c for v in videos for c in clips_for_video(v, "shots", 10.0, 2.0)]
    from longvila.infer.serve import make_server

    server = make_server(str(tiny_ckpt), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield {"tmp": tmp, "config": cfg, "ckpt": tiny_ckpt, "root": tmp / "data", "url": url,
           "videos": {v["video_id"]: v for v in videos}, "clips": clips}
    server.shutdown()


def _endpoint(url, **kw):
    return EndpointConfig(url=url, retries=kw.pop("retries", 1), backoff=0.01, requests_per_second=50, **kw)


def test_openai_captioner_against_a_served_model_and_its_cache(env, tmp_path):
    cfg = CaptionConfig(backend="openai", frames_per_clip=2, max_new_tokens=4, endpoint=_endpoint(env["url"]))
    clips = env["clips"][:3]
    rows = caption_clips(clips, env["videos"], env["root"], cfg, tmp_path / "cache.jsonl", Rejects("c"))
    assert [r["clip_id"] for r in rows] == [c["clip_id"] for c in clips]
    assert all(isinstance(r["caption"], str) and r["backend"] == "openai" for r in rows)
    again = caption_clips(clips, env["videos"], env["root"], cfg, tmp_path / "cache.jsonl", Rejects("c"))
    assert again == rows                                                   # served from the cache
    assert len((tmp_path / "cache.jsonl").read_text().splitlines()) == 3   # nothing captioned twice


def test_openai_qa_writer_keeps_raw_output_and_accounts_for_every_video(env):
    caps = [{**c, "caption": env["videos"][c["video_id"]]["captions"][c["shot_index"]]} for c in env["clips"]]
    by_video = {}
    for c in caps:
        by_video.setdefault(c["video_id"], []).append(c)
    cfg = QAConfig(backend="openai", max_new_tokens=12, endpoint=_endpoint(env["url"]))
    rejects = Rejects("qa")
    rows, raw = generate_qa(list(env["videos"].values()), by_video, cfg, rejects, read_prompt("qa_v1.txt"), "qa_v1")
    assert len(raw) == 2 and all(r["output"] is not None and "{captions}" not in r["prompt"] for r in raw)
    assert len({r["video_id"] for r in rows}) + rejects.total == 2        # a random model's text is rejected
    assert set(rejects.counts) <= {"no_json", "not_a_list", "missing_fields", "unknown_type", "empty"}


class _Flaky(BaseHTTPRequestHandler):
    plan: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        code, body = self.plan.pop(0) if len(self.plan) > 1 else self.plan[0]
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def flaky():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_client_retries_429_and_5xx_then_gives_up_on_garbage(flaky):
    ok = json.dumps({"choices": [{"message": {"content": "fine"}}]})
    _Flaky.plan = [(429, "slow down"), (503, "busy"), (200, ok)]
    client = ChatClient(_endpoint(flaky, retries=3))
    assert client.complete([user_message("hi")], 4)[0] == "fine" and client.stats == {"requests": 3, "retries": 2}
    _Flaky.plan = [(200, "{not json")]
    with pytest.raises(EndpointError, match="gave up after 3 attempts; last: malformed response"):
        ChatClient(_endpoint(flaky, retries=2)).complete([user_message("hi")], 4)
    _Flaky.plan = [(401, "bad key")]
    with pytest.raises(EndpointConfigError, match="HTTP 401 .*bad key.*OPENAI_API_KEY"):
        ChatClient(_endpoint(flaky, retries=5)).complete([user_message("hi")], 4)
    _Flaky.plan = [(200, json.dumps({"choices": [{"message": {"content": [{"type": "text", "text": "pa"},
                                                                          {"type": "text", "text": "rts"}]}}]}))]
    assert ChatClient(_endpoint(flaky)).complete([user_message("hi")], 4)[0] == "parts"


def test_endpoint_failures_are_counted_per_clip_and_successes_kept(env, flaky, tmp_path):
    ok = json.dumps({"choices": [{"message": {"content": "a caption"}}]})
    _Flaky.plan = [(200, ok), (400, "too big"), (200, ok), (400, "too big")]
    cfg = CaptionConfig(backend="openai", frames_per_clip=1, batch=4, endpoint=_endpoint(flaky, retries=0))
    rejects = Rejects("c")
    rows = caption_clips(env["clips"][:4], env["videos"], env["root"], cfg, tmp_path / "c.jsonl", rejects)
    assert len(rows) == 2 and dict(rejects.counts) == {"endpoint_error": 2}
    assert len((tmp_path / "c.jsonl").read_text().splitlines()) == 2       # the paid-for captions are cached


def test_the_server_answers_bad_requests_with_400_not_a_dropped_connection(env):
    import urllib.error
    import urllib.request

    def post(body: bytes):
        req = urllib.request.Request(env["url"] + "/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    for body in (b"[]", b"null", b"{not json", json.dumps({"messages": [{"role": "user", "content": [1]}]}).encode(),
                 json.dumps({"messages": [{"role": "user", "content": [
                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}).encode()):
        code, answer = post(body)
        assert code == 400 and answer["error"]["message"], body
    code, answer = post(json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode())
    assert code == 200 and isinstance(answer["choices"][0]["message"]["content"], str)


def test_transformers_qa_backend_on_a_local_causal_lm(env):
    cfg = QAConfig(backend="transformers", model_dir=str(env["ckpt"] / "llm"), max_new_tokens=8, temperature=0)
    video = next(iter(env["videos"].values()))
    caps = [{"video_id": video["video_id"], "clip_index": 0, "start_time": 0.0, "end_time": 2.0, "caption": "x"}]
    rejects = Rejects("qa")
    rows, raw = generate_qa([video], {video["video_id"]: caps}, cfg, rejects, read_prompt("qa_v1.txt"), "qa_v1")
    assert len(raw) == 1 and raw[0]["output"] and len(rows) + rejects.total >= 1


def test_longvila_captioner_batches_clips(env, tmp_path):
    cfg = CaptionConfig(backend="longvila", frames_per_clip=2, batch=2, max_new_tokens=3)
    clips = env["clips"][:3]
    from longvila.infer.captioner import LongVILACaptioner

    with pytest.raises(ValueError, match="make_captioner"):
        caption_clips(clips, env["videos"], env["root"], cfg, tmp_path / "c.jsonl", Rejects("c"))
    rows = caption_clips(clips, env["videos"], env["root"], cfg, tmp_path / "c.jsonl", Rejects("c"),
                         model_dir=str(env["ckpt"]), make_captioner=lambda: LongVILACaptioner(str(env["ckpt"]), cfg))
    assert len(rows) == 3 and {r["model"].split("@")[0] for r in rows} == {str(env["ckpt"])}


def test_a_killed_captioning_run_resumes_without_repeating_work(env, tmp_path):
    out, cache = tmp_path / "caption", tmp_path / "cache"
    index, clips_dir = tmp_path / "index", tmp_path / "clips"
    for name, folder in (("videos.parquet", index), ("clips.parquet", clips_dir)):
        folder.mkdir()
    from longvila.data.shot2story.clips import CLIPS_SCHEMA
    from longvila.data.shot2story.common import write_parquet
    from longvila.data.shot2story.index import VIDEOS_SCHEMA

    write_parquet(index / "videos.parquet", list(env["videos"].values()), VIDEOS_SCHEMA)
    (index / "manifest.json").write_text(json.dumps({"root": str(env["root"])}))
    write_parquet(clips_dir / "clips.parquet", env["clips"], CLIPS_SCHEMA)
    args = [sys.executable, "-m", "pipeline.s2s_caption", "--config", str(env["config"]), "--index", str(index),
            "--clips", str(clips_dir), "--cache", str(cache), "--out", str(out),
            "--set", "shot2story.caption.backend=openai", "--set", "shot2story.caption.batch=1",
            "--set", "shot2story.caption.frames_per_clip=1", "--set", "shot2story.caption.max_new_tokens=2",
            "--set", f"shot2story.caption.endpoint.url={env['url']}",
            "--set", "shot2story.caption.endpoint.requests_per_second=1.5"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    lines = cache / "openai.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not lines.is_file() or len(lines.read_text().splitlines()) < 2):
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    done_before = len(lines.read_text().splitlines())
    assert 2 <= done_before < len(env["clips"]) and not out.exists()       # killed midway, no partial output
    log = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert log.returncode == 0, log.stderr[-2000:]
    assert f"{done_before} cached" in log.stderr
    keys = [json.loads(line)["key"] for line in lines.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == len(env["clips"])                # each clip captioned exactly once
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["out"] == len(env["clips"]) and manifest["rejected_total"] == 0


def test_vila_json_loads_in_our_stage5_dataset(env, tmp_path):
    from transformers import AutoTokenizer

    from longvila.data.sft_dataset import VilaVideoDataset

    video = next(iter(env["videos"].values()))
    caps = [{**c, "caption": video["captions"][c["shot_index"]]} for c in env["clips"]
            if c["video_id"] == video["video_id"]]
    qa = [{"qa_id": f"q{i}", "video_id": video["video_id"], "question_type": p["type"], "question": p["question"],
           "answer": p["answer"], "backend": "template"} for i, p in enumerate(template_qa(video, caps, ["summary"], 0))]
    write_vila_json(tmp_path / "vila.json", sft_rows(qa, env["videos"], "annotation", 4, 0.0, 0))
    tokenizer = AutoTokenizer.from_pretrained(env["ckpt"] / "llm")
    ds = VilaVideoDataset(tmp_path / "vila.json", env["root"], tokenizer, num_frames=4)
    item = ds[0]
    assert len(ds) == 1 and item["frames"].shape == (4, SMALL.height, SMALL.width, 3)
    supervised = tokenizer.decode([t for t in item["labels"] if t != -100])
    assert video["whole_caption"] in supervised and "<vila/video>" in tokenizer.decode(item["input_ids"])
    (tmp_path / "bad.json").write_text(json.dumps([{"video": "a.mp4", "conversations": [{"from": "gpt", "value": "x"}]}]))
    with pytest.raises(ValueError, match="record 0: 'conversations' must be a list of turns starting with 'human'"):
        VilaVideoDataset(tmp_path / "bad.json", env["root"], tokenizer)
