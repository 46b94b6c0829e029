# Config validation (JSON schema + the dataclasses), path helpers and the final targets.
import base64
import json
import os
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from longvila.config import load_config, numbers_as_numbers
from longvila.data.corpus import HOLDOUT_FILE, PASSKEYS_FILE, train_file_names
from longvila.data.inputs import batch_names, corpus_files
from longvila.plan.check import check_training


def config_error(e):
    """A config problem as a short WorkflowError (no traceback, no schema dump), naming the files it came from."""
    files = ", ".join(map(str, workflow.configfiles)) or "the config"
    return WorkflowError(f"{e}\n(config merged from {files}; check a file alone with: "
                         "python -m longvila.config.check FILE)")


# Ours first: every unknown key (with "did you mean"), wrong type and failed check, one short block each; it
# accepts 2e-5 (a string to snakemake's YAML 1.1 parser), which numbers_as_numbers then writes as a number so
# that snakemake's validate (the generated schema; it fills the defaults) agrees.
try:
    CFG = load_config(config)
except ValueError as e:
    raise config_error(e) from None
validate(numbers_as_numbers(config, CFG), schema="../schemas/config.schema.yaml")
try:
    TRAIN_PLAN = check_training(CFG)  # world vs SP, heads, divisors, frames, batch: errors name field and fix
except ValueError as e:
    raise config_error(e) from None

MADE_CORPUS = "results/make_corpus"
CORPUS_ROOT, CORPUS_NAMES = corpus_files(CFG, MADE_CORPUS)
if CFG.shot2story.root is not None and not Path(CFG.shot2story.root).is_dir():
    raise ValueError(f"shot2story.root {CFG.shot2story.root!r} is not a folder; point it at a Shot2Story copy "
                     "(annotations/, videos/, shots/) or set it to null to use the offline set")
if CFG.model.checkpoint is not None and not (Path(CFG.model.checkpoint) / "config.json").is_file():
    raise ValueError(f"model.checkpoint {CFG.model.checkpoint!r} is not a checkpoint folder (no config.json); point "
                     "it at the stage-3 model in the released layout, or set it to null to start from a fresh "
                     "model of model.size")
BATCHES = batch_names(CORPUS_NAMES, CFG.slimpajama.files_per_batch)
BATCH_IDS = [f"b{i:04d}" for i in range(len(BATCHES))]
CONTEXTS = [c.name for c in CFG.pack.contexts]


wildcard_constraints:
    ctx="|".join(CONTEXTS),
    batch=r"b\d{4}",


def env(name):
    """Conda env file of a runtime (paths in conda: are relative to this rules folder)."""
    return f"../../envs/{name}.yaml"


def config_b64():
    """The merged, defaults-filled config, passed to resolve_config without shell quoting issues."""
    return base64.b64encode(json.dumps(config, sort_keys=True).encode()).decode()


def made_corpus_files():
    names = train_file_names(CFG.corpus) + [HOLDOUT_FILE, PASSKEYS_FILE]
    return [f"{MADE_CORPUS}/{n}" for n in names]


def corpus_root(wildcards):
    return str(CORPUS_ROOT)


def batch_inputs(wildcards):
    return [str(CORPUS_ROOT / n) for n in BATCHES[int(wildcards.batch[1:])]]


def run_cores():
    """--cores of a local run; None under a cluster executor (--profile slurm), where every job is sized by
    its own threads/resources and Snakemake has no total to ask for."""
    try:
        return workflow.cores
    except WorkflowError:                  # "Workflow requires a total number of cores to be defined"
        return None


def pack_threads():
    """pack.workers, or 0 = every core this run may use (--cores; under SLURM, 1 unless set-threads says)."""
    return CFG.pack.workers or max(1, min(run_cores() or 1, os.cpu_count() or 1))


def final_targets():
    targets = expand("results/pack_shards/{ctx}", ctx=CONTEXTS)
    if CFG.pack.export_original:
        targets += expand("results/export_original/{ctx}.jsonl", ctx=CONTEXTS)
    if CFG.slimpajama.root is None:
        targets.append(f"{MADE_CORPUS}/manifest.json")
    if CFG.model.checkpoint is None:
        targets.append(f"results/init_model/{CFG.model.size}")
    targets.append("results/s2s_assemble")
    return targets + training_targets()


def s2s_root():
    """The Shot2Story folder: shot2story.root, or the offline set that rule make_shot2story writes."""
    return CFG.shot2story.root or "results/make_shot2story"


def s2s_caption_model_arg():
    """--model for backend longvila: caption.model_dir, else the init_model checkpoint; empty otherwise."""
    cap = CFG.shot2story.caption
    if cap.backend != "longvila":
        return ""
    model_dir = cap.model_dir or f"results/init_model/{CFG.model.size}"
    return f"--model {model_dir}"


def s2s_caption_inputs(wildcards):
    inputs = {"config": "results/resolve_config/config.yaml", "index": "results/s2s_index",
              "clips": "results/s2s_clip"}
    cap = CFG.shot2story.caption
    if cap.backend == "longvila" and cap.model_dir is None:
        inputs["model"] = f"results/init_model/{CFG.model.size}"
    return inputs


# Training (workflow/rules/train.smk)
STAGE4 = [s.context for s in CFG.train.stage4]
STAGE5 = [f"{r.frames}f" for r in CFG.train.stage5]
if len(set(STAGE4)) != len(STAGE4) or len(set(STAGE5)) != len(STAGE5):
    raise ValueError("train.stage4 contexts and train.stage5 frame counts must be unique (each names a folder)")
INIT_MODEL = CFG.model.checkpoint or f"results/init_model/{CFG.model.size}"
# model.warm_start: stage 4's first step starts from the warm-started model (rule warm_start), which
# eval_passkey_warm measures at its trained length and at the first step's (the "before" of that extension)
WARM = CFG.model.warm_start
WARM_NAME = "warm_start"
WARM_MODEL = f"results/warm_start/{CFG.model.size}"
STAGE4_START = WARM_MODEL if WARM else INIT_MODEL
STAGE4_FINAL = f"results/train_stage4/{STAGE4[-1]}" if STAGE4 else STAGE4_START
# The launcher rules (train_stage4/5, eval_needle). train.launcher: local -- the rule's job holds the ranks:
# in a local run every core Snakemake may use (never two such jobs at once); under a cluster executor
# (--profile slurm) it is one sbatch job asking for at least one CPU per rank. train.launcher: submitit --
# the rule runs on the Snakemake host (localrule), submits its own SLURM job (nodes, GPUs, CPUs per task,
# time, memory from train.cluster) and only waits for it: one thread.
LAUNCHER_RULES_LOCAL = CFG.train.launcher == "submitit"
if LAUNCHER_RULES_LOCAL:
    TRAIN_THREADS = 1
else:
    TRAIN_THREADS = max(CFG.train.cluster.cpu_processes, run_cores() or 1)


def stage4_init(wildcards):
    i = STAGE4.index(wildcards.s4)
    return STAGE4_START if i == 0 else f"results/train_stage4/{STAGE4[i - 1]}"


def passkey_next_arg(wildcards):
    """eval_passkey's --next-context: the step after this one, whose length is then measured before it trains."""
    i = STAGE4.index(wildcards.s4)
    return f"--next-context {STAGE4[i + 1]}" if i + 1 < len(STAGE4) else ""


def stage5_init(wildcards):
    """The checkpoint a stage-5 run starts from: its train.stage5[].init_from stage-4 step, else the last one."""
    run = CFG.train.stage5[STAGE5.index(wildcards.s5)]
    return f"results/train_stage4/{run.init_from}" if run.init_from else STAGE4_FINAL


def passkey_folders():
    """The passkey evaluations in training order: the warm start's (when on), then one per stage-4 step."""
    return ([f"results/eval_passkey/{WARM_NAME}"] if WARM else []) + expand("results/eval_passkey/{s4}", s4=STAGE4)


def training_runs():
    """The results/runs/ folders whose metrics.jsonl the reports plot, in training order."""
    return (([f"{WARM_NAME}/{CFG.model.size}"] if WARM else []) + [f"stage4/{c}" for c in STAGE4]
            + [f"stage5/{f}" for f in STAGE5])


def training_targets():
    return (expand("results/train_stage4/{s4}", s4=STAGE4) + passkey_folders()
            + expand("results/train_stage5/{s5}", s5=STAGE5) + ["results/train_report"] + eval_targets())


# Evaluation (workflow/rules/eval.smk)
NEEDLE = CFG.eval.needle
HAYSTACK = NEEDLE.haystack or "results/make_haystack/haystack.mp4"
NEEDLES = NEEDLE.needles or "results/make_needles"
NEEDLE_TRAINING = NEEDLE.needles is None and NEEDLE.train_samples > 0
_EVAL_WORLD = CFG.train.cluster.gpus_per_node or CFG.train.cluster.cpu_processes
if _EVAL_WORLD % (NEEDLE.ulysses * NEEDLE.ring):
    raise ValueError(f"eval.needle.ulysses x ring = {NEEDLE.ulysses * NEEDLE.ring} must divide the {_EVAL_WORLD} ranks "
                     "of one node (train.cluster.gpus_per_node, or cpu_processes on CPU); change the degrees")
if NEEDLE.haystack is not None and not Path(NEEDLE.haystack).is_file():
    raise ValueError(f"eval.needle.haystack {NEEDLE.haystack!r} is not a file; point it at a video of at least "
                     f"{NEEDLE.max_frames} s, or set it to null to use the haystack that rule make_haystack makes")
if NEEDLE.needles is not None and not (Path(NEEDLE.needles) / "needles.json").is_file():
    raise ValueError(f"eval.needle.needles {NEEDLE.needles!r} has no needles.json; see longvila/eval/haystack.py "
                     "for the format, or set it to null to use the colour needles that rule make_needles makes")


def stage5_data(wildcards):
    """--data / --media of a stage-5 run: the Shot2Story SFT data, plus the needle samples of its frame count."""
    data, media = ["results/s2s_assemble/vila_train.json"], [s2s_root()]
    if NEEDLE_TRAINING:
        data.append(f"results/make_needles/train/{wildcards.s5}/vila_train.json")
        media.append(f"results/make_needles/train/{wildcards.s5}")
    return {"data": data, "media": media}


def eval_targets():
    return expand("results/eval_needle/{s5}", s5=STAGE5) + expand("results/eval_bench/{s5}", s5=STAGE5) + [
        "results/report"]
