"""Extract one model's features on one dataset into the store (see prh.pipeline.extract_features)."""

from prh.pipeline import extract_features, logged
from prh.runtime import prepare_job

with logged(snakemake.log[0]):
    prepare_job(snakemake.threads)
    extract_features(
        snakemake.wildcards.model,
        snakemake.params.spec,
        list(snakemake.input.model),
        snakemake.input.data,
        snakemake.params.store,
        snakemake.params.extraction,
        snakemake.output.receipt,
        device=snakemake.params.device,
        n_gpus=snakemake.resources.gpu,
        gpu=snakemake.params.gpu,
        batch_size=snakemake.params.batch_size,
    )
