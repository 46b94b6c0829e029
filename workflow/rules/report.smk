# The run report: one self-contained page (results/report/index.html, report.md) over the whole run: data
# statistics, loss curves, passkey per stage-4 step, the needle grid and benchmarks per stage-5 model, config.
# Include after train.smk (it names rules.train_report). The metrics.jsonl files in results/runs/ are not
# rule outputs; train_report is the input that guarantees every run finished before they are read.


rule run_report:
    input:
        config=rules.resolve_config.output.config,
        corpus=[f"{MADE_CORPUS}/manifest.json"] if CFG.slimpajama.root is None else [],
        shards=expand("results/pack_shards/{ctx}", ctx=CONTEXTS),
        s2s="results/s2s_assemble",
        train_report=rules.train_report.output,
        passkey=passkey_folders(),
        needle=expand("results/eval_needle/{s5}", s5=STAGE5),
        bench=expand("results/eval_bench/{s5}", s5=STAGE5),
    output:
        directory("results/report"),
    params:
        runs=training_runs(),
    log:
        "logs/run_report/run_report.log",
    conda:
        env("train")
    message:
        "Run report: results/report/index.html (data, training, passkey, needle, benchmarks, config)"
    shell:
        "python -m pipeline.run_report --config {input.config} --corpus {input.corpus} --shards {input.shards}"
        " --s2s {input.s2s} --runs-root results/runs --runs {params.runs} --passkey {input.passkey}"
        " --needle {input.needle} --bench {input.bench} --out {output} > {log} 2>&1"
