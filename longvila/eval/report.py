"""The run report: one self-contained page (index.html + report.md) on a whole run, from its outputs.

What it shows: the config, data statistics (made corpus, stage-4 shards, stage-5 SFT data), loss curves and
throughput of every training run, passkey accuracy per stage-4 step (before and after each extension), the
video needle grid and benchmark metrics per stage-5 model, each with what the number means and its chance
level: after `snakemake all` a user opens one page, not twenty folders. Every input is an explicit path; an
absent one shows a "not run" note, an unreadable one raises ValueError naming it. Images are copied next to
the page (img/): the folder is self-contained, needs no JS, and can be moved as a whole. The page model
(`Section`) and its HTML / Markdown renderings live in report_render.py.

    inputs = ReportInputs(config="config.yaml", shards={"512": "results/pack_shards/512"},
                          passkey={"512": "results/eval_passkey/512"})
    write_report("report", inputs)      # -> report/index.html, report/report.md, report/img/*.png
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from longvila.eval.report_render import Section, render_html, render_markdown

PASSKEY_CHANCE = 1 / 90_000  # a 5-digit key (10000-99999) guessed uniformly at random


@dataclass
class ReportInputs:
    """Paths of one run's outputs; a dict maps a display name (context, frame count, run) to its path."""

    config: str | Path
    """The resolved config.yaml (required)."""
    corpus: str | Path | None = None
    """manifest.json of the made corpus (rule make_corpus); None when a real SlimPajama copy was used."""
    shards: dict[str, str | Path] = field(default_factory=dict)
    """Context name -> pack_shards folder (its manifest.json)."""
    s2s: str | Path | None = None
    """The s2s_assemble folder (manifest.json, report.md, thumbs/)."""
    runs: dict[str, str | Path] = field(default_factory=dict)
    """Run name ("stage4/512", "stage5/8f") -> its metrics.jsonl."""
    passkey: dict[str, str | Path] = field(default_factory=dict)
    """Stage-4 context -> eval_passkey folder (passkey.json, heatmap.png)."""
    needle: dict[str, str | Path] = field(default_factory=dict)
    """Stage-5 run -> eval_needle folder (summary.json, all_accuracies.json, heatmap.png)."""
    bench: dict[str, str | Path] = field(default_factory=dict)
    """Stage-5 run -> eval_bench folder (metrics.json)."""


# ---- reading ----------------------------------------------------------------------------------------------
def _read_json(path: Path, keys: tuple[str, ...] = (), kind: type = dict):
    """Parsed JSON of `path`; ValueError naming the file when it is not JSON, not a `kind`, or lacks `keys`."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:                    # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{path}: missing or not valid JSON ({e}); rerun the rule that writes it") from None
    if not isinstance(data, kind):
        raise ValueError(f"{path}: expected a JSON {kind.__name__}, got {type(data).__name__}")
    missing = [k for k in keys if k not in data] if kind is dict else []
    if missing:
        raise ValueError(f"{path}: missing keys {missing}; rerun the rule that writes it")
    return data


def _read_metrics(path: Path) -> list[dict]:
    from longvila.utils.curves import read_metrics

    rows = read_metrics(path)
    if not rows or any(not isinstance(r, dict) or "step" not in r or "loss" not in r for r in rows):
        raise ValueError(f"{path}: no metrics rows with 'step' and 'loss'; rerun that training rule")
    return rows


def _num(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:,.0f}" if v.is_integer() and abs(v) >= 1000 else f"{v:.4g}"
    return str(v)


def _pct(v) -> str:
    return f"{100 * v:.1f}%" if isinstance(v, (int, float)) else str(v)


def _copy_image(src: Path, out: Path, name: str, sec: Section, caption: str) -> None:
    if not src.is_file():
        sec.note(f"{src} is missing: no image")
        return
    (out / "img").mkdir(exist_ok=True)
    shutil.copyfile(src, out / "img" / name)
    sec.blocks.append(("img", f"img/{name}", caption))


def _present(items: dict, sec: Section, what: str, rule: str) -> dict[str, Path]:
    """The items whose path exists; a "not run" note for each missing one (and for none configured)."""
    if not items:
        sec.note(f"not run: this run's config has no {what}")
    found = {}
    for name, path in items.items():
        if Path(path).exists():
            found[name] = Path(path)
        else:
            sec.note(f"{what} {name}: not run (no {path}; rule {rule.format(group=str(name).split('/')[0])})")
    return found


# ---- sections ----------------------------------------------------------------------------------------------
def config_section(path: Path) -> tuple[Section, dict]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        cfg = yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: a config must be a YAML mapping")
    sec = Section("config", "Config used", "The resolved config every rule of this run read (defaults filled in).")
    train = cfg.get("train") or {}
    rows = [["run name", cfg.get("run_name", "")], ["model size", (cfg.get("model") or {}).get("size", "")],
            ["packed contexts", ", ".join(str(c.get("name")) for c in (cfg.get("pack") or {}).get("contexts", []))],
            ["stage-4 steps", ", ".join(f"{s.get('context')} (RoPE θ {_num(s.get('rope_theta'))})"
                                        for s in train.get("stage4", []))],
            ["stage-5 runs", ", ".join(f"{r.get('frames')} frames" for r in train.get("stage5", []))],
            ["engine / launcher", f"{train.get('engine', '')} / {train.get('launcher', '')}"]]
    sec.blocks += [("table", ["key", "value"], rows), ("pre", "config.yaml", text)]
    return sec, cfg


def data_section(inputs: ReportInputs, out: Path) -> Section:
    sec = Section("data", "Data", "What the training stages read. Stage 4 trains on packed rows of exactly "
                  "seq_len tokens (documents joined with an EOS token); stage 5 on video question/answer samples.")
    sec.blocks.append(("h3", "Corpus (made offline)"))
    if inputs.corpus is None or not Path(inputs.corpus).is_file():
        sec.note("not run: no made corpus (a real SlimPajama copy was used, or rule make_corpus did not run)")
    else:
        m = _read_json(Path(inputs.corpus), ("train_records", "heldout_records"))
        sec.blocks.append(("table", ["train documents", "held-out documents", "passkey docs (train / held-out)",
                                     "files"], [[_num(m["train_records"]), _num(m["heldout_records"]),
                                                 f"{m.get('passkeys_train', '?')} / {m.get('passkeys_heldout', '?')}",
                                                 _num(len(m.get("files", {})))]]))
    sec.blocks.append(("h3", "Stage-4 packed shards"))
    manifests = {n: _read_json(p / "manifest.json", ("seq_len", "rows", "tokens", "sources"))
                 for n, p in _present(inputs.shards, sec, "packed context", "pack_shards").items()}
    if manifests:
        rows = []
        for name, m in manifests.items():
            rec = m.get("records", {})
            reasons = {**m.get("dropped", {}), **m.get("skipped", {})}
            rows.append([name, _num(m["seq_len"]), _num(m["rows"]), _num(m["tokens"]),
                         _num(m.get("remainder_tokens")), _num(m.get("documents")),
                         f"{_num(rec.get('accepted'))} of {_num(rec.get('lines'))}",
                         ", ".join(f"{k}: {_num(v)}" for k, v in sorted(reasons.items())) or "none"])
        sec.blocks += [("table", ["context", "seq_len", "rows", "tokens", "left over", "documents",
                                  "records accepted", "dropped / skipped by reason"], rows),
                       ("p", "tokens = rows x seq_len; left over: tokens of the last, partial row (not trained on). "
                             "Dropped: documents left out by the sampling (short ones are kept at pack.keep_ratio, "
                             "none past the token budget); skipped: records that could not be read.")]
        sources = sorted({s for m in manifests.values() for s in m["sources"]})
        sec.blocks.append(("table", ["source"] + [f"{n}: tokens (docs)" for n in manifests],
                           [[s] + [f"{_num(m['sources'].get(s, {}).get('tokens', 0))} "
                                   f"({_num(m['sources'].get(s, {}).get('documents', 0))})"
                                   for m in manifests.values()] for s in sources]))
    sec.blocks.append(("h3", "Stage-5 SFT data (Shot2Story)"))
    if inputs.s2s is None or not Path(inputs.s2s).is_dir():
        sec.note(f"not run: no {inputs.s2s or 's2s_assemble folder'} (rule s2s_assemble)")
        return sec
    s2s = Path(inputs.s2s)
    m = _read_json(s2s / "manifest.json", ("in", "out"))
    sec.blocks.append(("table", ["QA pairs in", "samples out", "split (samples)", "videos per split", "rejected"],
                       [[_num(m["in"]), _num(m["out"]), _kv(m.get("splits", {})) or "—",
                         _kv(m.get("videos_per_split", {})) or "—", _kv(m.get("rejected", {})) or "none"]]))
    if (s2s / "report.md").is_file():
        (out / "s2s").mkdir(exist_ok=True)
        shutil.copyfile(s2s / "report.md", out / "s2s" / "report.md")
        if (s2s / "thumbs").is_dir():
            shutil.copytree(s2s / "thumbs", out / "s2s" / "thumbs", dirs_exist_ok=True)
        sec.blocks.append(("link", "Counts per preparation step and sample QA with clip thumbnails:",
                           "s2s/report.md"))
    return sec


def _kv(d: dict) -> str:
    return ", ".join(f"{k}: {_num(v)}" for k, v in d.items())


def training_section(runs: dict[str, str | Path], out: Path, vocab: int | None) -> Section:
    from longvila.utils.curves import plot_loss_curves

    chance = (f" A model that guesses uniformly over the {vocab:,}-token vocabulary scores ln({vocab:,}) = "
              f"{math.log(vocab):.2f}." if vocab else "")
    sec = Section("training", "Training", "Loss is the mean cross-entropy per target token over all ranks (nats; "
                  f"lower is better).{chance} Throughput is tokens per second of the whole job.")
    found = _present(runs, sec, "training run", "train_{group}")
    metrics = {n: _read_metrics(p) for n, p in found.items()}
    groups: dict[str, dict] = {}
    for name in metrics:
        groups.setdefault(name.split("/")[0], {})[name] = found[name]
    (out / "img").mkdir(exist_ok=True)
    for group, paths in groups.items():
        plot_loss_curves(paths, out / "img" / f"loss_{group}.png", title=f"{group} training loss")
        sec.blocks.append(("img", f"img/loss_{group}.png", f"{group}: loss (left) and learning rate (right) per "
                                                           "optimizer step"))
    rows = []
    for name, m in metrics.items():
        speed = [r["tokens_per_s"] for r in m if "tokens_per_s" in r]
        sec.headline.append(f"Training {name}: loss {m[0]['loss']:.3f} -> {m[-1]['loss']:.3f} "
                            f"in {m[-1]['step']} steps.")
        rows.append([name, _num(m[-1]["step"]), f"{m[0]['loss']:.4f}", f"{m[-1]['loss']:.4f}",
                     f"{min(r['loss'] for r in m):.4f}", _num(round(statistics.median(speed))) if speed else "—",
                     _num(round(max(r.get("peak_rss_mib", 0) for r in m))),
                     _num(round(max(r.get("peak_gpu_mib", 0) for r in m))) if "peak_gpu_mib" in m[-1] else "—"])
    if rows:
        sec.blocks.append(("table", ["run", "steps", "first loss", "last loss", "min loss", "median tokens/s",
                                     "peak RSS MiB", "peak GPU MiB"], rows))
    return sec


def passkey_section(passkey: dict[str, str | Path], out: Path) -> Section:
    from longvila.eval.passkey import extension_rows

    sec = Section("passkey", "Passkey retrieval (stage 4)", "After each context-extension step the model reads a "
                  "long held-out text with a 5-digit pass key hidden at a given depth and must repeat the key. "
                  "Accuracy = share of documents whose first generated number is the key; chance (guessing) is "
                  f"1 in 90,000 ({100 * PASSKEY_CHANCE:.3f}%). Each step is tested at its own length, the one "
                  "before, and the next step's length (before that step trains there). With model.warm_start the "
                  "first row, warm_start, is the model stage 4 starts from, tested at the longest length it "
                  "trained on and at the first step's.")
    rows, steps = [], []
    for ctx, folder in _present(passkey, sec, "stage-4 step", "eval_passkey").items():
        r = _read_json(folder / "passkey.json", ("accuracy", "grid", "results"))
        steps.append((ctx, r))
        by_len = ", ".join(f"{n} tok: {_pct(statistics.mean(d.values()))}"
                           for n, d in sorted(r["grid"].items(), key=lambda kv: int(kv[0])) if d)
        rows.append([ctx, _num(r.get("rope_theta")), _num(r.get("max_position_embeddings")), _num(len(r["results"])),
                     _pct(r["accuracy"]), by_len])
        _copy_image(folder / "heatmap.png", out, f"passkey_{ctx}.png", sec, f"passkey accuracy by length and "
                                                                          f"depth after step {ctx}")
    ext = [[e["context"], _num(e["length"]), "-" if e["before"] is None else _pct(e["before"]), _pct(e["after"])]
           for e in extension_rows(steps)]
    sec.headline += [f"Warm start: passkey retrieval at {n} tokens {a}." for c, n, _, a in ext[:1] if c == "warm_start"]
    sec.headline += [f"Stage-4 step {c}: passkey retrieval at {n} tokens {b} before it, {a} after (chance about 0%)."
                     for c, n, b, a in ext[1:]]
    if rows:
        sec.blocks[:0] = [("table", ["step", "its length", "before it (previous model)", "after it"], ext),
                          ("table", ["context", "RoPE θ", "max positions", "documents", "accuracy",
                                     "accuracy by length (depth-averaged)"], rows)]
    return sec


NEEDLE_KEYS = ("frames", "depths", "chance", "avg_accuracy", "accuracy_by_frames", "trained_frames",
               "accuracy_at_trained")


def needle_section(needle: dict[str, str | Path], out: Path) -> Section:
    sec = Section("needle", "Video needle in a haystack (stage 5)", "A needle frame with a question is inserted at "
                  "a depth (0% = first frame, 100% = end) into a haystack video of N frames; a cell's score is the "
                  "share of needles the model answers exactly. Compare with chance (random answers) and look at "
                  "haystacks longer than the frame count the model was trained on.")
    for run, folder in _present(needle, sec, "stage-5 model", "eval_needle").items():
        s = _read_json(folder / "summary.json", NEEDLE_KEYS)
        sec.blocks.append(("h3", f"Model {run}"))
        rope, sp = s.get("rope") or {}, s.get("sp") or {}
        glance = (f"average accuracy {_pct(s['avg_accuracy'])} vs chance {_pct(s['chance'])}; "
                  f"{_pct(s['accuracy_at_trained'] if s['accuracy_at_trained'] is not None else 'n/a')} on "
                  f"haystacks up to the trained {s['trained_frames']} frames")
        sec.headline.append(f"Needle, model {run}: {glance}.")
        sec.blocks.append(("p", f"{glance[0].upper()}{glance[1:]}, over {_num(s.get('cells', '?'))} cells "
                                f"(needles: {_num(s.get('needles', '?'))}). RoPE θ {_num(rope.get('rope_theta'))}, "
                                f"scaling {rope.get('rope_scaling')}; sequence parallel Ulysses "
                                f"{sp.get('ulysses', '?')} x ring {sp.get('ring', '?')}."))
        cells = _read_json(folder / "all_accuracies.json", kind=list)
        grid: dict[int, dict[float, float]] = {}
        for c in cells:
            if not isinstance(c, dict) or not {"Num. Frame", "Frame Depth", "Score"} <= c.keys():
                raise ValueError(f"{folder / 'all_accuracies.json'}: a cell lacks 'Num. Frame', 'Frame Depth' or "
                                 "'Score'; rerun rule eval_needle")
            grid.setdefault(int(c["Num. Frame"]), {})[float(c["Frame Depth"])] = c["Score"]
        depths = sorted({d for row in grid.values() for d in row})
        by_frames = s["accuracy_by_frames"]
        rows = [[f"{n}{' (trained)' if n == s['trained_frames'] else ''}",
                 _pct(by_frames.get(str(n), float("nan")))] + [_pct(grid[n][d]) if d in grid[n] else "—"
                                                                for d in depths] for n in sorted(grid)]
        sec.blocks.append(("table", ["frames", "mean"] + [f"depth {d:g}%" for d in depths], rows))
        _copy_image(folder / "heatmap.png", out, f"needle_{run}.png", sec, f"needle accuracy, model {run}")
    return sec


def bench_section(bench: dict[str, str | Path]) -> Section:
    sec = Section("bench", "Benchmarks (lmms-eval)", "Each stage-5 model on lmms-eval tasks at the given frames per "
                  "video. Chance is the score of answering at random (e.g. 1 / options for multiple choice).")
    rows = []
    for run, folder in _present(bench, sec, "stage-5 model", "eval_bench").items():
        m = _read_json(folder / "metrics.json", ("tasks",))
        if not isinstance(m["tasks"], dict) or not all(isinstance(v, dict) for v in m["tasks"].values()):
            raise ValueError(f"{folder / 'metrics.json'}: 'tasks' must map task -> {{metric: value}}")
        for task, metrics in m["tasks"].items():
            shown = [[run, task, _num(m.get("num_frames", {}).get(task, "?")), k, _num(v),
                      _num(m.get("chance", {}).get(task, "?"))] for k, v in metrics.items() if k != "alias"]
            rows += shown
            if shown:                                     # the task's first metric (lmms-eval: the main one)
                sec.headline.append(f"{task}, model {run}: {shown[0][3]} {shown[0][4]} (chance {shown[0][5]}).")
        sec.blocks.append(("p", f"Model {run}: lmms-eval {m.get('lmms_eval_version', '?')}."))
    if rows:
        sec.blocks.insert(0, ("table", ["model", "task", "frames", "metric", "value", "chance"], rows))
    return sec


def write_report(out: str | Path, inputs: ReportInputs) -> dict:
    """Write index.html, report.md and img/ into the (existing or new) folder `out`.

    Returns:
        {"sections": {key: "ok" | "not run"}}: a section is "not run" when it holds only notes.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_sec, cfg = config_section(Path(inputs.config))
    vocab = None
    for folder in inputs.shards.values():
        if (Path(folder) / "manifest.json").is_file():
            vocab = (_read_json(Path(folder) / "manifest.json").get("tokenizer") or {}).get("vocab_size")
    sections = [data_section(inputs, out), passkey_section(inputs.passkey, out), needle_section(inputs.needle, out),
                bench_section(inputs.bench), cfg_sec]   # every file read and checked before the (slow) plots
    sections.insert(1, training_section(inputs.runs, out, vocab))
    sections.insert(0, Section("summary", "At a glance", "The headline numbers; the sections below explain them.",
                               [("p", h) for s in sections for h in s.headline]
                               or [("note", "not run: no training or evaluation results yet")]))
    title = f"LongVILA run report: {cfg.get('run_name', '')}"
    lead = (f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from the outputs of this run. Red italic "
            "notes mark parts that did not run.")
    (out / "index.html").write_text(render_html(title, lead, sections), encoding="utf-8")
    (out / "report.md").write_text(render_markdown(title, lead, sections), encoding="utf-8")
    ran = {s.key: any(b[0] not in ("note", "h3") for b in s.blocks) for s in sections}
    return {"sections": {k: "ok" if v else "not run" for k, v in ran.items()}}
