# Evaluation: the V-NIAH inputs (a haystack of real footage and colour needles, made offline unless
# eval.needle.haystack / eval.needle.needles name the user's own) and the needle grid of every stage-5 model,
# with sequence-parallel prefill. eval_needle is a local "launcher" rule like training: finished cells live
# in results/runs/eval_needle/ (not declared) so a rerun skips them; haystack embeddings are cached in
# results/cache/needle/.


rule make_haystack:
    input:
        config=rules.resolve_config.output.config,
    output:
        directory("results/make_haystack"),
    log:
        "logs/make_haystack/make_haystack.log",
    conda:
        env("prep")
    message:
        f"V-NIAH haystack: {NEEDLE.max_frames} s of looped real footage at 1 frame/s"
    shell:
        "python -m pipeline.make_needles haystack --config {input.config} --out {output} > {log} 2>&1"


rule make_needles:
    input:
        config=rules.resolve_config.output.config,
    output:
        directory("results/make_needles"),
    log:
        "logs/make_needles/make_needles.log",
    conda:
        env("prep")
    message:
        "V-NIAH needles (colour frames) and their stage-5 training samples"
    shell:
        "python -m pipeline.make_needles needles --config {input.config} --out {output} > {log} 2>&1"


rule eval_needle:
    input:
        config=rules.resolve_config.output.config,
        model="results/train_stage5/{s5}",
        haystack=HAYSTACK if NEEDLE.haystack else "results/make_haystack",
        needles=NEEDLES,
    output:
        directory("results/eval_needle/{s5}"),
    params:
        haystack=HAYSTACK,
        frames=lambda wildcards: wildcards.s5.removesuffix("f"),
        run_dir="results/runs/eval_needle/{s5}",
    threads: TRAIN_THREADS
    localrule: LAUNCHER_RULES_LOCAL
    log:
        "logs/eval_needle/{s5}.log",
    conda:
        env("train")
    message:
        "V-NIAH on stage 5 {wildcards.s5}: frames x depth grid, SP prefill (cells in {params.run_dir})"
    shell:
        "python -m pipeline.eval_needle --config {input.config} --model {input.model} --haystack {params.haystack}"
        " --needles {input.needles} --trained-frames {params.frames} --run-dir {params.run_dir}"
        " --cache-dir results/cache/needle --out {output} > {log} 2>&1"
