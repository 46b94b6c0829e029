# Stage-4 data: SlimPajama (*.jsonl.zst) -> tokenizer -> packed fixed-length Parquet shards per context.


rule resolve_config:
    output:
        config="results/resolve_config/config.yaml",
    params:
        b64=config_b64(),
    log:
        "logs/resolve_config/resolve_config.log",
    conda:
        env("prep")
    message:
        "Resolve and validate the run configuration"
    shell:
        "python -m pipeline.resolve_config --from-b64 {params.b64} --out {output.config} > {log} 2>&1"


rule make_corpus:
    input:
        config=rules.resolve_config.output.config,
    output:
        files=made_corpus_files(),
        manifest=f"{MADE_CORPUS}/manifest.json",
    log:
        "logs/make_corpus/make_corpus.log",
    benchmark:
        "benchmarks/make_corpus/make_corpus.tsv"
    conda:
        env("prep")
    message:
        "Build the offline SlimPajama-format corpus (real text, 7 sources, passkeys)"
    shell:
        "python -m pipeline.make_corpus --config {input.config} --out $(dirname {output.manifest}) > {log} 2>&1"


rule pack_batch:
    input:
        config=rules.resolve_config.output.config,
        files=batch_inputs,
    output:
        directory("results/pack_batch/{ctx}/{batch}"),
    params:
        root=corpus_root,
    threads: pack_threads()
    log:
        "logs/pack_batch/{ctx}/{batch}.log",
    benchmark:
        "benchmarks/pack_batch/{ctx}/{batch}.tsv"
    conda:
        env("prep")
    message:
        "Pack batch {wildcards.batch} into {wildcards.ctx}-token rows"
    shell:
        "python -m pipeline.pack_batch --config {input.config} --set pack.workers={threads}"
        " --context {wildcards.ctx} --root {params.root} --inputs {input.files} --out {output} > {log} 2>&1"


rule pack_shards:
    input:
        config=rules.resolve_config.output.config,
        batches=expand("results/pack_batch/{{ctx}}/{batch}", batch=BATCH_IDS),
    output:
        directory("results/pack_shards/{ctx}"),
    log:
        "logs/pack_shards/{ctx}.log",
    benchmark:
        "benchmarks/pack_shards/{ctx}.tsv"
    conda:
        env("prep")
    message:
        "Merge the {wildcards.ctx} batches into the final shards + manifest.json"
    shell:
        "python -m pipeline.pack_shards --config {input.config} --batches {input.batches} --out {output} > {log} 2>&1"


rule export_original:
    input:
        shards="results/pack_shards/{ctx}",
    output:
        "results/export_original/{ctx}.jsonl",
    log:
        "logs/export_original/{ctx}.log",
    conda:
        env("prep")
    message:
        "Export {wildcards.ctx} shards in the original LongVILA trainer's JSON-lines format"
    shell:
        "python -m pipeline.export_original --shards {input.shards} --out {output} > {log} 2>&1"
