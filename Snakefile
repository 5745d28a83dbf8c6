# gensens: which indicators predict generalization? (Novak et al. 2018, arXiv 1802.08760)
# Stages: data -> train -> measure -> aggregate -> stats -> plots, one rules/<stage>.smk each.
import sys

from snakemake.utils import min_version

from workflow_src.config import ConfigError, load_study, study_files, validate_config

min_version("9.0")


report: "report/workflow.rst"


# The study is exactly the --configfile(s) given, else the config.yaml beside this file, plus
# --config; the schema's defaults fill the rest. (A `configfile:` directive would merge the
# demo's config.yaml of the working directory under every study.) A config error prints
# only its message, which names the file or key and the fix: raised, it would come after
# Snakemake's "ConfigError in file Snakefile, line N" and before traceback lines.
try:
    STUDY_FILES = study_files(workflow.config_settings.configfiles, workflow.basedir)
    workflow.configfiles[:] = STUDY_FILES  # the files --report lists and --archive packs
    config = validate_config(load_study(STUDY_FILES, workflow.config_settings.config))
except ConfigError as error:
    print(error, file=sys.stderr)
    sys.exit(1)


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
