# gensens: which indicators predict generalization? (Novak et al. 2018, arXiv 1802.08760)
# Stages: data -> train -> measure -> aggregate -> stats -> plots, one rules/<stage>.smk each.
from snakemake.utils import min_version

from workflow_src.config import load_study, study_files, validate_config

min_version("9.0")


report: "report/workflow.rst"


# The study is exactly the --configfile(s) given, else the config.yaml beside this file, plus
# --config; the schema's defaults fill the rest. (A `configfile:` directive would merge the
# demo's config.yaml of the working directory under every study.)
STUDY_FILES = study_files(workflow.config_settings.configfiles, workflow.basedir)
workflow.configfiles[:] = STUDY_FILES  # the files --report lists and --archive packs
config = validate_config(load_study(STUDY_FILES, workflow.config_settings.config))


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/measure.smk"
include: "rules/aggregate.smk"
include: "rules/stats.smk"
include: "rules/plots.smk"
include: "rules/studies.smk"
include: "rules/keskar.smk"
include: "rules/snapshots.smk"
include: "rules/verify.smk"


rule all:
    input:
        TARGETS,
    default_target: True
