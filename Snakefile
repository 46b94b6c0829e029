# longvila: the LongVILA pipeline as a Snakemake DAG.
#   snakemake --cores 2 all                      # the default tiny, offline run (make demo)
#   snakemake --configfile workflow/configs/paper.yaml -n all
# Rules live in workflow/rules/*.smk; each calls one `python -m pipeline.<rule>` CLI.
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

from longvila.config.errors import read_yaml

min_version("9.0")

# Snakemake's own parse says only "not valid JSON or YAML"; ours names the line (a --configfile is parsed by
# snakemake before this file runs: `python -m longvila.config.check FILE` names its line).
if Path("config.yaml").is_file():
    try:
        read_yaml("config.yaml")
    except ValueError as e:
        raise WorkflowError(str(e)) from None


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
