"""Draw one figure (see prh.pipeline.draw_figure)."""

from prh.pipeline import draw_figure, logged

with logged(snakemake.log[0]):
    draw_figure(snakemake.wildcards.figure, dict(snakemake.input.items()), snakemake.params.figure, snakemake.output.png)
