# prh: does representational alignment grow with competence? (The Platonic Representation Hypothesis)
# Table of contents only: every stage lives in rules/, every computation in src/prh/.
from snakemake.utils import min_version

min_version("8.0")


# The offline default, unless --configfile names a whole config of its own (configs/paper.yaml, ...).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "rules/common.smk"


wildcard_constraints:
    model="[A-Za-z0-9][A-Za-z0-9_.+-]*",
    dataset="[A-Za-z0-9][A-Za-z0-9_.+-]*",
    experiment="[A-Za-z0-9][A-Za-z0-9_.+-]*",


include: "rules/data.smk"
include: "rules/zoo.smk"
include: "rules/extract.smk"
include: "rules/lm.smk"
include: "rules/probe.smk"
include: "rules/align.smk"
include: "rules/colour.smk"
include: "rules/report.smk"
include: "rules/tts.smk"


rule all:
    default_target: True
    input:
        all_targets(),
