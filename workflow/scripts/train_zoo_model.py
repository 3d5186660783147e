"""Train or reuse one zoo model (see prh.pipeline.train_zoo_model)."""

from prh.pipeline import logged, train_zoo_job
from prh.runtime import prepare_job

with logged(snakemake.log[0]):
    prepare_job(snakemake.threads)
    train_zoo_job(
        snakemake.wildcards.model,
        snakemake.params.spec,
        snakemake.params.cache,
        snakemake.output.receipt,
        device=snakemake.params.device,
        gpus=snakemake.params.gpus,
        wait_s=snakemake.params.gpu_wait_s,
    )
