"""Build one packaged model's weights cache in the store (see prh.pipeline.prepare_model_job)."""

from prh.pipeline import logged, prepare_model_job
from prh.runtime import prepare_job

with logged(snakemake.log[0]):
    prepare_job(snakemake.threads)
    prepare_model_job(snakemake.wildcards.model, snakemake.params.spec, snakemake.params.store, snakemake.output.receipt)
