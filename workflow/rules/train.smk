# Training: stage 4 (one rule run per context step, each from the previous step's merged checkpoint), a
# passkey eval after every step, stage 5 (long-video SFT, one run per frame count), and the training report.
# The training rules are "launcher" rules: they start the ranks as their own job's processes (train.launcher:
# local; under --profile slurm that job is one sbatch job) or, on the Snakemake host, submit a SLURM job
# through submitit and wait (train.launcher: submitit; see LAUNCHER_RULES_LOCAL in common.smk). Intermediate
# checkpoints, metrics and per-rank logs live in results/runs/ (not declared), so Snakemake never deletes
# them and a rerun resumes.

wildcard_constraints:
    s4="|".join(re.escape(c) for c in STAGE4) or "^$",
    s5="|".join(re.escape(f) for f in STAGE5) or "^$",


rule train_stage4:
    input:
        config=rules.resolve_config.output.config,
        init=stage4_init,
        shards="results/pack_shards/{s4}",
    output:
        directory("results/train_stage4/{s4}"),
    params:
        step=lambda wildcards: STAGE4.index(wildcards.s4),
        run_dir="results/runs/stage4/{s4}",
    threads: TRAIN_THREADS
    localrule: LAUNCHER_RULES_LOCAL
    log:
        "logs/train_stage4/{s4}.log",
    conda:
        env("train")
    message:
        "Stage 4, context {wildcards.s4}: RoPE base up, LoRA + MM-SP training, merge (run dir {params.run_dir})"
    shell:
        "python -m pipeline.train_stage4 --config {input.config} --step {params.step} --init {input.init}"
        " --shards {input.shards} --run-dir {params.run_dir} --out {output} > {log} 2>&1"


rule eval_passkey:
    input:
        config=rules.resolve_config.output.config,
        model="results/train_stage4/{s4}",
        passkeys=f"{MADE_CORPUS}/{PASSKEYS_FILE}",
    output:
        directory("results/eval_passkey/{s4}"),
    params:
        next_arg=passkey_next_arg,
    log:
        "logs/eval_passkey/{s4}.log",
    conda:
        env("train")
    message:
        "Passkey retrieval after stage 4 {wildcards.s4} (its length, the one before, and the next step's)"
    shell:
        "python -m pipeline.eval_passkey --config {input.config} --context {wildcards.s4} --model {input.model}"
        " --passkeys {input.passkeys} {params.next_arg} --out {output} > {log} 2>&1"


rule eval_passkey_warm:
    input:
        config=rules.resolve_config.output.config,
        model=WARM_MODEL,
        passkeys=f"{MADE_CORPUS}/{PASSKEYS_FILE}",
    output:
        directory(f"results/eval_passkey/{WARM_NAME}"),
    params:
        next_arg=f"--next-context {STAGE4[0]}" if STAGE4 else "",
        length=max(WARM.passkey_lengths) if WARM else 0,
    log:
        f"logs/eval_passkey/{WARM_NAME}.log",
    conda:
        env("train")
    message:
        "Passkey retrieval after the warm start (its trained length, and the first stage-4 step's)"
    shell:
        "python -m pipeline.eval_passkey --config {input.config} --length {params.length} --model {input.model}"
        " --passkeys {input.passkeys} {params.next_arg} --out {output} > {log} 2>&1"


rule train_stage5:
    input:
        config=rules.resolve_config.output.config,
        init=stage5_init,
        data="results/s2s_assemble",
        media=s2s_root(),
        needles=NEEDLES if NEEDLE_TRAINING else [],
    output:
        directory("results/train_stage5/{s5}"),
    params:
        run=lambda wildcards: STAGE5.index(wildcards.s5),
        run_dir="results/runs/stage5/{s5}",
        data=lambda wildcards: " ".join(stage5_data(wildcards)["data"]),
        media=lambda wildcards: " ".join(stage5_data(wildcards)["media"]),
    threads: TRAIN_THREADS
    localrule: LAUNCHER_RULES_LOCAL
    log:
        "logs/train_stage5/{s5}.log",
    conda:
        env("train")
    message:
        "Stage 5, {wildcards.s5}: long-video SFT with MM-SP (run dir {params.run_dir}; data {params.data})"
    shell:
        "python -m pipeline.train_stage5 --config {input.config} --run {params.run} --init {input.init}"
        " --data {params.data} --media {params.media} --run-dir {params.run_dir} --out {output}"
        " > {log} 2>&1"


rule train_report:
    input:
        stage4=expand("results/train_stage4/{s4}", s4=STAGE4),
        passkey=passkey_folders(),
        stage5=expand("results/train_stage5/{s5}", s5=STAGE5),
    output:
        directory("results/train_report"),
    params:
        runs=training_runs(),
    log:
        "logs/train_report/train_report.log",
    conda:
        env("train")
    message:
        "Training report: loss curves of every run, passkey accuracy per stage-4 step"
    shell:
        "python -m pipeline.train_report --runs-root results/runs --runs {params.runs}"
        " --passkey {input.passkey} --out {output} > {log} 2>&1"
