"""Compare colour distances from pixels and language models with CIELAB (see prh.pipeline.colour_job)."""

from prh.pipeline import colour_job, logged

with logged(snakemake.log[0]):
    colour_job(snakemake.input.names[0], list(snakemake.input.images), list(snakemake.input.receipts),
               snakemake.params.store, snakemake.params.colour, dict(snakemake.output.items()))
