"""Collect language scores into one table (see prh.pipeline.language_table)."""

from prh.pipeline import language_table, logged

with logged(snakemake.log[0]):
    language_table(list(snakemake.input.scores), snakemake.params.published, snakemake.output.table)
