"""Assemble the self-contained HTML report (see prh.pipeline.build_report)."""

from prh.pipeline import build_report, logged

with logged(snakemake.log[0]):
    build_report(snakemake.params.config, snakemake.params.figures, snakemake.output.html)
