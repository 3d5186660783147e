# Helpers shared by every stage: config validation, lookups and input functions. No rule lives here.
import sys

from prh.config import ConfigError, read_yaml, validate_config
from prh import plan

try:
    for _configfile in workflow.configfiles:
        read_yaml(_configfile)
    _validated = validate_config(config)
except ConfigError as _err:
    sys.exit(str(_err))
config.clear()
config.update(_validated)

PLAN = plan.Plan(config)
# Hub entries not in the hub cache stop their jobs in one line each: say why once, before anything runs
if PLAN.uncached_hub_entries():
    print(PLAN.hub_warning(), file=sys.stderr)
# Every result path, declared once in prh.plan.Paths ("{wildcard}" as a name gives the rule's pattern).
PATHS = PLAN.paths


def all_targets():
    """Everything the default target builds (the report and the tables behind it)."""
    return PLAN.targets()


def dataset_spec(wildcards):
    """The dataset's spec, a hub dataset's with its resolved commit (prh.plan.Plan.dataset_spec)."""
    return PLAN.dataset_spec(wildcards.dataset)


def align_priority(wildcards):
    return PLAN.priority(experiment=wildcards.experiment)


def extract_priority(wildcards):
    return PLAN.priority(receipt=PATHS.receipt(wildcards.dataset, wildcards.model))


def model_priority(wildcards):
    return PLAN.priority(model=wildcards.model)


def model_spec(wildcards):
    """The model's spec, a hub model's with its resolved commit (prh.plan.Plan.model_spec)."""
    return PLAN.model_spec(wildcards.model)


def model_receipt(wildcards):
    """What a job loading the model waits for: its zoo training or weights-cache receipt, or nothing."""
    return PLAN.model_receipt(wildcards.model)


def extraction_params(wildcards):
    return PLAN.extraction_params(wildcards.model)


def extraction_batch_size(wildcards):
    return PLAN.batch_size(wildcards.model)


def gpu_count(wildcards):
    """GPUs a job running the model requests: from its n_params, dtype and gpu_memory_gb; 0 without config gpus."""
    return PLAN.gpus(wildcards.model)


def gpu_mem_mb(wildcards):
    """GPU memory (MB, over all the job's GPUs) a job running the model is estimated to use (shown, not enforced)."""
    return PLAN.gpu_mem_mb(wildcards.model)


def gpu_settings(wildcards):
    """Slots, per-GPU memory, offload and slot wait of GPU jobs (prh.plan.Plan.gpu_settings)."""
    return PLAN.gpu_settings()


def extract_mem_mb(wildcards):
    return PLAN.mem_mb(wildcards.model)


def dataset_mem_mb(wildcards):
    return PLAN.dataset_resources(wildcards.dataset)["mem_mb"]


def dataset_runtime(wildcards):
    return PLAN.dataset_resources(wildcards.dataset)["runtime"]


def extract_runtime(wildcards):
    return PLAN.runtime_min(wildcards.model)


def lm_inputs(wildcards):
    return PLAN.lm_inputs(wildcards.model)


def probe_inputs(wildcards):
    return PLAN.probe_inputs(wildcards.model)


def experiment_spec(wildcards):
    return config["alignment"]["experiments"][wildcards.experiment]


def align_device(wildcards):
    """The config device for sample-size sweeps (the large-n engine runs on it), else cpu."""
    return config["device"] if "sizes" in experiment_spec(wildcards) else "cpu"


def experiment_xs(wildcards):
    return PLAN.experiment_models(wildcards.experiment)[0]


def experiment_ys(wildcards):
    return PLAN.experiment_models(wildcards.experiment)[1]


def experiment_receipt_map(wildcards):
    return PLAN.experiment_receipt_map(wildcards.experiment)


def experiment_receipts(wildcards):
    return PLAN.experiment_receipts(wildcards.experiment)


def colour_inputs(wildcards):
    """What the colour stage reads (prh.plan.Plan.colour_inputs)."""
    return PLAN.colour_inputs()


def colour_params(wildcards):
    """The colour stage's settings (config colour), without the names of its inputs."""
    return PLAN.colour_params()


def figure_inputs(wildcards):
    """The files one figure reads (prh.plan.FIGURES)."""
    return PLAN.figures[wildcards.figure].inputs


def figure_params(wildcards):
    """The config values one figure reads, and nothing else: an unrelated change does not redraw it."""
    return PLAN.figures[wildcards.figure].params


def report_inputs(wildcards):
    """The declared files the report reads or needs built (prh.plan.Plan.report_inputs)."""
    return PLAN.report_inputs()


def tts_receipts(wildcards):
    """The test-time-scaling receipts one dataset's analysis reads (prh.plan.Plan.tts_receipts)."""
    return PLAN.tts_receipts(wildcards.dataset)


def tts_params(wildcards):
    return PLAN.tts_params(wildcards.model, wildcards.axis)


def tts_sizes(wildcards):
    return PLAN.tts_sizes(wildcards.axis)
