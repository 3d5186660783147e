"""Accuracy, solved matrix and tasks solved over all models (see prh.pipeline.probe_summary)."""

from prh.pipeline import logged, probe_summary

with logged(snakemake.log[0]):
    probe_summary(list(snakemake.input.tables), snakemake.params.threshold, dict(snakemake.output.items()))
