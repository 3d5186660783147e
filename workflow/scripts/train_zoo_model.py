"""Train or reuse one zoo model (see prh.pipeline.train_zoo_model)."""

from prh.pipeline import logged, set_threads, train_zoo_job

with logged(snakemake.log[0]):
    set_threads(snakemake.threads)
    train_zoo_job(
        snakemake.wildcards.model,
        snakemake.params.spec,
        snakemake.params.cache,
        snakemake.output.receipt,
        device=snakemake.params.device,
        gpus=snakemake.params.gpus,
    )
