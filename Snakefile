# gensens: which indicators predict generalization? (Novak et al. 2018, arXiv 1802.08760)
# Stages: data -> train -> measure -> aggregate -> stats -> plots, one rules/<stage>.smk each.
from snakemake.utils import min_version

from workflow_src.config import validate_config

min_version("9.0")


report: "report/workflow.rst"


configfile: "config.yaml"


validate_config(config)


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/measure.smk"
include: "rules/aggregate.smk"
include: "rules/stats.smk"
include: "rules/plots.smk"
include: "rules/studies.smk"


rule all:
    input:
        TARGETS,
    default_target: True
