"""One row per model: modality, family, objective, size (see prh.pipeline.model_table)."""

from prh.pipeline import logged, model_table

with logged(snakemake.log[0]):
    model_table(snakemake.params.models, list(snakemake.input.receipts), snakemake.output.table)
