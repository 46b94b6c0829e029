# longvila: the LongVILA pipeline as a Snakemake DAG.
#   snakemake --cores 2 all                      # the default tiny, offline run (make demo)
#   snakemake --configfile workflow/configs/paper.yaml -n all
# Rules live in workflow/rules/*.smk; each calls one `python -m pipeline.<rule>` CLI.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/slimpajama.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/shot2story.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/eval.smk"
include: "workflow/rules/eval_bench.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    localrule: True
    input:
        final_targets(),
