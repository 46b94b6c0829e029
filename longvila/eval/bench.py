"""Benchmarks through lmms-eval, the way vila-eval runs them: one lmms-eval process per task, one metrics.json.

What: `expand_tasks` turns a vila-eval style task list ("lmms-videomme-256/vnbench_val,mvbench") into
lmms-eval task names with a frame count each (vila-eval's convention: 256 frames for Video-MME, 128 for
VNBench, 32 for the others; a `-N` suffix pins a task's frames, a global `num_frames` overrides the rest).
`run_bench` runs `python -m lmms_eval --model longvila_repro --model_args pretrained=DIR,num_frames=N --tasks T
--log_samples` per task (offline Hugging Face settings unless `online`), keeps each task's results.json,
samples.jsonl and lmms_eval.log in `<out>/<task>/`, and gathers the numbers into `<out>/metrics.json`:
    {"model", "num_frames": {task: N}, "tasks": {task: {"metric,filter": value}}, "num_docs": {task: n},
     "primary_metric": {task: key}, "chance": {task: p}, "lmms_eval_version", "limit", "errors": {task: why}}
Why: lmms-eval owns the benchmark data, prompts and scoring; our side is the model plugin
(longvila/eval/lmms_model.py) and the bookkeeping vila-eval does (LONGVILA.md section 6.2).

    tasks = expand_tasks("longvila_localmc", num_frames=8)
    metrics = run_bench("results/train_stage5/8f", tasks, "runs/eval/8f", include_path="results/make_bench_task")
"""

from __future__ import annotations

import difflib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from longvila.utils.io import write_json_atomic
from longvila.utils.logging import get_logger

INSTALL_HINT = ("install it with `make install`, or `pip install --no-deps -r requirements-eval.txt` (--no-deps: "
                "lmms-eval's own dependencies pull a CUDA build of torch)")
DIST_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
            "TORCHELASTIC_RUN_ID")
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
MODEL_NAME = "longvila_repro"               # our lmms-eval model id (longvila/eval/lmms_entry.py)
LOCAL_TASK = "longvila_localmc"


@dataclass(frozen=True)
class TaskInfo:
    """What longvila knows about a benchmark of the paper's list (vila-eval's llava/eval/registry.yaml)."""

    vila_name: str
    """The task's name in vila-eval (`-t`)."""
    metric: str | None
    """Headline key in lmms-eval's results (vila-eval's metric path); None when scored elsewhere."""
    chance: float | None
    """Accuracy of a uniform guess (None: open-ended, or options vary per question)."""
    needs: str
    """What a run needs besides the model."""


_HF = "its Hugging Face dataset in the cache (run once with --online)"
KNOWN_TASKS = {
    "videomme": TaskInfo("lmms-videomme-256", "videomme_perception_score,none", 0.25, _HF),
    "videomme_w_subtitle": TaskInfo("lmms-videomme_w_subtitle-256", "videomme_perception_score,none", 0.25, _HF),
    "vnbench": TaskInfo("vnbench_val", None, 0.25, "VILA's own script (not an lmms-eval 0.7.3 task)"),
    "activitynetqa": TaskInfo("lmms-activitynetqa", "gpt_eval_accuracy,none", None, _HF + " and an OpenAI judge"),
    "egoschema": TaskInfo("egoschema_test", None, 0.2, _HF + "; scored by the EgoSchema server (submission)"),
    "egoschema_subset": TaskInfo("egoschema_val", "score,none", 0.2, _HF),
    "eventbench": TaskInfo("eventbench_val", None, None, "VILA's own script (not an lmms-eval 0.7.3 task)"),
    "longvideobench_val_v": TaskInfo("lmms-longvideobench_val_v", "lvb_acc,none", None, _HF),
    "perceptiontest_val_mc": TaskInfo("lmms-perceptiontest_val_mc", "accuracy,none", 1 / 3, _HF),
    "mvbench": TaskInfo("lmms-mvbench", "mvbench_accuracy,none", None, _HF),
    "nextqa_mc_test": TaskInfo("lmms-nextqa_mc_test", "exact_match,none", 0.2, _HF),
    LOCAL_TASK: TaskInfo(LOCAL_TASK, "accuracy,none", 0.25, "the folder of rule make_bench_task (--include-path)"),
}
PAPER_TASKS = tuple(k for k in KNOWN_TASKS if k != LOCAL_TASK)   # the LongVILA README's list, in its order
NOT_IN_LMMS_EVAL = ("vnbench", "eventbench")
VILA_ALIASES = {info.vila_name.removeprefix("lmms-").split("-")[0]: name for name, info in KNOWN_TASKS.items()}


@dataclass(frozen=True)
class BenchTask:
    """One lmms-eval run: a task at a frame count."""

    name: str
    """lmms-eval task (or group) name."""
    num_frames: int
    """Frames per video given to the model (model arg num_frames)."""
    label: str
    """Key in metrics.json and the task's output folder: the name, or name-N when a name runs at several N."""


def default_frames(name: str) -> int:
    """vila-eval's frame convention for LongVILA: 256 for Video-MME tasks, 128 for VNBench, 32 otherwise."""
    if name.startswith("videomme"):
        return 256
    if name.startswith("vnbench"):
        return 128
    return 32


def expand_tasks(tasks: str | list[str], num_frames: int | None = None) -> list[BenchTask]:
    """vila-eval style names -> BenchTasks (see the module docstring).

    Args:
        tasks: names separated by "," or "/" (or a list): lmms-eval names, or vila-eval names such as
            lmms-videomme-256, vnbench_val, egoschema_test (a `lmms-` prefix is dropped, a `-N` suffix pins N).
        num_frames: frames for every task without a `-N` suffix (None: vila-eval's convention).
    """
    names = re.split(r"[,/]", tasks) if isinstance(tasks, str) else list(tasks)
    picked: list[tuple[str, int]] = []
    for raw in (n.strip() for n in names):
        if not raw:
            continue
        name, pinned = raw.removeprefix("lmms-"), None
        if m := re.fullmatch(r"(.+)-(\d+)", name):
            name, pinned = m.group(1), int(m.group(2))
        name = VILA_ALIASES.get(name, name)
        frames = pinned or num_frames or default_frames(name)
        if frames < 1:
            raise ValueError(f"task {raw!r}: frames must be >= 1")
        if (name, frames) not in picked:
            picked.append((name, frames))
    if not picked:
        raise ValueError(f"no task in {tasks!r}; give lmms-eval task names, e.g. -t {LOCAL_TASK} or videomme,mvbench")
    repeated = {n for n, _ in picked if sum(m == n for m, _ in picked) > 1}
    return [BenchTask(n, f, f"{n}-{f}" if n in repeated else n) for n, f in picked]


def lmms_eval_version() -> str:
    """The installed lmms-eval's version; a ValueError naming the install command when it is missing."""
    if importlib.util.find_spec("lmms_eval") is None:
        raise ValueError(f"lmms-eval is not installed for {sys.executable}; {INSTALL_HINT}")
    try:
        return importlib.metadata.version("lmms-eval")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def available_tasks(include_path: str | Path | None = None) -> set[str]:
    """Task, group and tag names declared in lmms-eval's task YAML files and under `include_path` (a fast
    scan of `task:` / `group:` / `tag:` lines; lmms-eval's own TaskManager takes ~20 s to index)."""
    spec = importlib.util.find_spec("lmms_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"lmms-eval is not installed for {sys.executable}; {INSTALL_HINT}")
    roots = [Path(next(iter(spec.submodule_search_locations))) / "tasks"]
    roots += [Path(include_path)] if include_path else []
    line = re.compile(r"^(?:task|group|tag):\s*[\"']?([\w.\-]+)[\"']?\s*$", re.M)
    names: set[str] = set()
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and (path.suffix in (".yaml", ".yml") or path.name.endswith("_yaml")):
                names.update(line.findall(path.read_text(encoding="utf-8", errors="replace")))
    return names


def check_tasks(tasks: list[BenchTask], include_path: str | Path | None = None) -> None:
    """Every task exists in lmms-eval or under `include_path`; else a ValueError that names the fix."""
    version = lmms_eval_version()
    for t in tasks:
        if t.name in NOT_IN_LMMS_EVAL:
            raise ValueError(f"{t.name} ({KNOWN_TASKS[t.name].vila_name}) is not an lmms-eval {version} task; VILA "
                             "runs it with its own script. Give a task folder that defines it with --include-path")
    if include_path is not None and not Path(include_path).is_dir():
        raise ValueError(f"--include-path {include_path} is not a folder")
    known = available_tasks(include_path)
    for t in tasks:
        if t.name in known:
            continue
        if t.name == LOCAL_TASK:
            raise ValueError(f"{LOCAL_TASK} needs its task folder: run rule make_bench_task (snakemake "
                             "results/make_bench_task) and pass --include-path results/make_bench_task")
        close = difflib.get_close_matches(t.name, sorted(known), n=3)
        raise ValueError(f"unknown lmms-eval task {t.name!r} (lmms-eval {version}"
                         f"{', include path ' + str(include_path) if include_path else ''})"
                         f"{'; did you mean ' + ', '.join(close) + '?' if close else ''}; list them with "
                         "`python -m lmms_eval --tasks list`")


def lmms_eval_command(model_dir: str | Path, task: BenchTask, out_dir: str | Path,
                      include_path: str | Path | None = None, limit: int | None = None) -> list[str]:
    """The `python -m lmms_eval ...` argument list of one task (this interpreter, so the same environment)."""
    model = str(Path(model_dir).resolve())
    if "," in model or "=" in model:
        raise ValueError(f"model folder {model} contains ',' or '=', which lmms-eval's --model_args cannot carry; "
                         "move or link it to a plain path")
    cmd = [sys.executable, "-m", "lmms_eval", "--model", MODEL_NAME,
           "--model_args", f"pretrained={model},num_frames={task.num_frames}", "--tasks", task.name,
           "--batch_size", "1", "--output_path", str(Path(out_dir).resolve()), "--log_samples"]
    if include_path is not None:
        cmd += ["--include_path", str(Path(include_path).resolve())]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    return cmd


def run_task(cmd: list[str], task_dir: Path, online: bool = False) -> Path:
    """Run one lmms-eval process; its output goes to the console (stderr) and `task_dir/lmms_eval.log`.

    Returns the results JSON it wrote (copied to `task_dir/results.json`, its samples to samples.jsonl);
    a RuntimeError with the log's last lines when it fails.
    """
    raw = task_dir / "lmms_eval"
    shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir(parents=True)
    # one plain process: a rank's torch.distributed variables (from a launcher or a test that ran before in
    # this process) would make lmms-eval's Accelerator try to join a process group that does not exist
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    env.update({} if online else OFFLINE_ENV)
    tail: list[str] = []
    with open(task_dir / "lmms_eval.log", "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        # cwd: the task folder (paths in cmd are absolute), not a source checkout whose *.egg-info could shadow
        # the installed entry points (`python -m` puts the cwd first on sys.path)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                                errors="replace", bufsize=1, cwd=task_dir)
        for line in proc.stdout:
            log.write(line)
            sys.stderr.write(line)
            tail = (tail + [line.rstrip()])[-15:]
        rc = proc.wait()
    found = sorted(raw.rglob("*_results.json"), key=lambda p: p.stat().st_mtime)
    if rc != 0 or not found:
        raise RuntimeError(f"lmms-eval exited with {rc}{'' if found else ' and wrote no results'} (log: "
                           f"{task_dir / 'lmms_eval.log'}):\n" + "\n".join(tail))
    shutil.copyfile(found[-1], task_dir / "results.json")
    samples = sorted(raw.rglob("*_samples_*.jsonl"))
    if samples:
        with open(task_dir / "samples.jsonl", "w", encoding="utf-8") as out:
            for path in samples:
                out.write(path.read_text(encoding="utf-8"))
    return task_dir / "results.json"


def collect_metrics(results: dict, name: str) -> tuple[dict[str, float], int | None]:
    """({"metric,filter": value} of task or group `name`, number of docs scored) from lmms-eval's results JSON.

    Metric values and their plain `_stderr` are kept (not the CLT/clustered variants, nor "N/A"); for a group,
    each subtask's values are added as "subtask/metric,filter".
    """
    def numeric(entry: dict, prefix: str = "") -> dict[str, float]:
        keep = {}
        for key, value in entry.items():
            metric = key.split(",")[0]
            if isinstance(value, (int, float)) and not isinstance(value, bool) and (
                    "_stderr" not in metric or metric.endswith("_stderr")):
                keep[prefix + key] = float(value)
        return keep

    entry = results.get("groups", {}).get(name) or results.get("results", {}).get(name)
    if entry is None:
        raise ValueError(f"lmms-eval's results have no entry {name!r} (entries: {sorted(results.get('results', {}))})")
    metrics = numeric(entry)
    subtasks = results.get("group_subtasks", {}).get(name) or []
    for sub in subtasks:
        metrics.update(numeric(results.get("results", {}).get(sub, {}), prefix=f"{sub}/"))
    counts = results.get("n-samples", {})
    docs = [counts[n]["effective"] for n in (subtasks or [name]) if n in counts]
    return metrics, (sum(docs) if docs else None)


def run_bench(model_dir: str | Path, tasks: list[BenchTask], out_dir: str | Path,
              include_path: str | Path | None = None, limit: int | None = None, online: bool = False) -> dict:
    """Run every task (see the module docstring) and write `<out_dir>/metrics.json`; returns its content.

    A task that fails is recorded under "errors" (with its log's tail) and the others still run.
    """
    check_tasks(tasks, include_path)
    out = Path(out_dir)
    metrics = {"model": str(model_dir), "num_frames": {t.label: t.num_frames for t in tasks}, "tasks": {},
               "num_docs": {}, "primary_metric": {}, "chance": {}, "lmms_eval_version": lmms_eval_version(),
               "limit": limit, "errors": {}}
    for i, task in enumerate(tasks, 1):
        task_dir = out / task.label
        task_dir.mkdir(parents=True, exist_ok=True)
        get_logger().info(f"bench [{i}/{len(tasks)}] {task.label}: {task.num_frames} frames -> {task_dir}")
        cmd = lmms_eval_command(model_dir, task, task_dir / "lmms_eval", include_path, limit)
        try:
            results = json.loads(run_task(cmd, task_dir, online).read_text())
            values, docs = collect_metrics(results, task.name)
        except (RuntimeError, ValueError) as e:
            needs = f" (this task needs {info.needs})" if (info := KNOWN_TASKS.get(task.name)) else ""
            metrics["errors"][task.label] = f"{e}{needs}"
            get_logger().error(f"bench {task.label}: {e}{needs}")
            continue
        metrics["tasks"][task.label], metrics["num_docs"][task.label] = values, docs
        info = KNOWN_TASKS.get(task.name)
        if info is not None and info.metric is not None:
            metrics["primary_metric"][task.label] = info.metric
        if info is not None and info.chance is not None:
            metrics["chance"][task.label] = info.chance
        get_logger().info(f"bench {task.label}: {json.dumps(values)} over {docs} docs")
    write_json_atomic(out / "metrics.json", metrics)
    return metrics
