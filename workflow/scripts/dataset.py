"""Materialise one dataset (see prh.pipeline.materialise_dataset)."""

from prh.pipeline import logged, materialise_dataset

with logged(snakemake.log[0]):
    materialise_dataset(snakemake.wildcards.dataset, snakemake.params.spec, snakemake.output.npz)
