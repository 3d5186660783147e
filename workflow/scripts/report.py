"""Assemble the self-contained HTML report from its declared inputs (see prh.pipeline.build_report)."""

from prh.pipeline import build_report, logged

with logged(snakemake.log[0]):
    inputs = {k: [v] if isinstance(v, str) else list(v) for k, v in snakemake.input.items()}
    build_report(snakemake.params.config, inputs, snakemake.output.html, hub_commits=snakemake.params.hub_commits)
