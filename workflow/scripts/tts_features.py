"""One model's test-time-scaling store entries on one axis (see prh.tts.features_job)."""

from prh.pipeline import logged
from prh.runtime import prepare_job
from prh.tts import features_job

with logged(snakemake.log[0]):
    prepare_job(snakemake.threads)
    features_job(
        snakemake.wildcards.model,
        snakemake.params.spec,
        list(snakemake.input.model),
        snakemake.input.data,
        snakemake.params.store,
        snakemake.params.extraction,
        snakemake.wildcards.axis,
        snakemake.params.sizes,
        snakemake.params.view_seed,
        snakemake.output.receipt,
        device=snakemake.params.device,
        n_gpus=snakemake.resources.gpu,
        gpu=snakemake.params.gpu,
        batch_size=snakemake.params.batch_size,
    )
