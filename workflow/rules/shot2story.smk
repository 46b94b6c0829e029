# Stage-5 data: Shot2Story long videos -> clips -> captions -> long-video QA -> SFT Parquet + VILA JSON.


rule make_shot2story:
    input:
        config=rules.resolve_config.output.config,
    output:
        directory("results/make_shot2story"),
    log:
        "logs/make_shot2story/make_shot2story.log",
    benchmark:
        "benchmarks/make_shot2story/make_shot2story.tsv"
    conda:
        env("prep")
    message:
        "Make the offline Shot2Story-format dataset (real multi-shot .mp4 + annotations)"
    shell:
        "python -m pipeline.make_shot2story --config {input.config} --out {output} > {log} 2>&1"


rule s2s_index:
    input:
        config=rules.resolve_config.output.config,
        root=s2s_root(),
    output:
        directory("results/s2s_index"),
    log:
        "logs/s2s_index/s2s_index.log",
    benchmark:
        "benchmarks/s2s_index/s2s_index.tsv"
    conda:
        env("prep")
    message:
        "Validate the Shot2Story annotations, resolve and probe the videos"
    shell:
        "python -m pipeline.s2s_index --config {input.config} --root {input.root} --out {output} > {log} 2>&1"


rule s2s_clip:
    input:
        config=rules.resolve_config.output.config,
        index=rules.s2s_index.output,
    output:
        directory("results/s2s_clip"),
    log:
        "logs/s2s_clip/s2s_clip.log",
    conda:
        env("prep")
    message:
        "Cut the videos into clips ({params.mode})"
    params:
        mode=CFG.shot2story.clip.mode,
    shell:
        "python -m pipeline.s2s_clip --config {input.config} --index {input.index} --out {output} > {log} 2>&1"


rule s2s_caption:
    input:
        unpack(s2s_caption_inputs),
    output:
        directory("results/s2s_caption"),
    params:
        cache="results/cache/s2s_caption",
        model=s2s_caption_model_arg(),
        backend=CFG.shot2story.caption.backend,
    log:
        "logs/s2s_caption/s2s_caption.log",
    benchmark:
        "benchmarks/s2s_caption/s2s_caption.tsv"
    conda:
        env("train")
    message:
        "Caption every clip (backend {params.backend})"
    shell:
        "python -m pipeline.s2s_caption --config {input.config} --index {input.index} --clips {input.clips}"
        " --cache {params.cache} {params.model} --out {output} > {log} 2>&1"


rule s2s_qa:
    input:
        config=rules.resolve_config.output.config,
        index=rules.s2s_index.output,
        captions=rules.s2s_caption.output,
    output:
        directory("results/s2s_qa"),
    log:
        "logs/s2s_qa/s2s_qa.log",
    benchmark:
        "benchmarks/s2s_qa/s2s_qa.tsv"
    conda:
        env("train")
    message:
        "Write long-video QA from the ordered clip captions"
    shell:
        "python -m pipeline.s2s_qa --config {input.config} --index {input.index} --captions {input.captions}"
        " --out {output} > {log} 2>&1"


rule s2s_assemble:
    input:
        config=rules.resolve_config.output.config,
        index=rules.s2s_index.output,
        clips=rules.s2s_clip.output,
        captions=rules.s2s_caption.output,
        qa=rules.s2s_qa.output,
    output:
        directory("results/s2s_assemble"),
    log:
        "logs/s2s_assemble/s2s_assemble.log",
    conda:
        env("prep")
    message:
        "Assemble the SFT data (Parquet, VILA JSON split by video, report)"
    shell:
        "python -m pipeline.s2s_assemble --config {input.config} --index {input.index} --clips {input.clips}"
        " --captions {input.captions} --qa {input.qa} --out {output} > {log} 2>&1"
