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
