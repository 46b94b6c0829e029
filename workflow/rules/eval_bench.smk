# Benchmarks through lmms-eval: the offline multiple-choice task about the workflow-made validation videos
# (longvila_localmc), then eval.bench.tasks on every stage-5 model, one lmms-eval process per task, with the
# `longvila` lmms-eval model (entry point group lmms_eval.models). metrics.json per model.


rule make_bench_task:
    input:
        config=rules.resolve_config.output.config,
        root=s2s_root(),
        data="results/s2s_assemble",
    output:
        directory("results/make_bench_task"),
    log:
        "logs/make_bench_task/make_bench_task.log",
    conda:
        env("prep")
    message:
        "lmms-eval task longvila_localmc: multiple-choice questions about the validation videos"
    shell:
        "python -m pipeline.make_bench_task --config {input.config} --root {input.root} --data {input.data}"
        " --out {output} > {log} 2>&1"


rule eval_bench:
    input:
        config=rules.resolve_config.output.config,
        model="results/train_stage5/{s5}",
        task_dir=rules.make_bench_task.output,
    output:
        directory("results/eval_bench/{s5}"),
    params:
        tasks=",".join(CFG.eval.bench.tasks),
    log:
        "logs/eval_bench/{s5}.log",
    benchmark:
        "benchmarks/eval_bench/{s5}.tsv"
    conda:
        env("eval")
    message:
        "lmms-eval benchmarks of stage-5 model {wildcards.s5} ({params.tasks})"
    shell:
        "python -m pipeline.eval_bench --config {input.config} --model {input.model} --task-dir {input.task_dir}"
        " --out {output} > {log} 2>&1"
