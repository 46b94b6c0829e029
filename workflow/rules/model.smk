# The model the training stages start from: a released checkpoint (model.checkpoint) or a fresh one of model.size.


rule init_model:
    input:
        config=rules.resolve_config.output.config,
    output:
        directory("results/init_model/{size}"),
    log:
        "logs/init_model/{size}.log",
    conda:
        env("train")
    message:
        "Initialise a {wildcards.size} LongVILA model in the released checkpoint layout"
    shell:
        "python -m pipeline.init_model --config {input.config} --out {output} > {log} 2>&1"


rule warm_start:
    input:
        config=rules.resolve_config.output.config,
        init=INIT_MODEL,
    output:
        directory(WARM_MODEL),
    params:
        run_dir=f"results/runs/{WARM_NAME}/{CFG.model.size}",
    threads: (WARM.threads if WARM and WARM.threads else max(1, run_cores() or 1))
    log:
        f"logs/warm_start/{CFG.model.size}.log",
    conda:
        env("train")
    message:
        "Warm start: teach the initial model to retrieve pass keys at a short context (model.warm_start)"
    shell:
        "python -m pipeline.warm_start --config {input.config} --init {input.init} --run-dir {params.run_dir}"
        " --out {output} > {log} 2>&1"
