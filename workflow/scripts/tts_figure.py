"""Draw one dataset's test-time-scaling figure (see prh.tts.figure_job)."""

from prh.pipeline import logged
from prh.tts import figure_job

with logged(snakemake.log[0]):
    figure_job(snakemake.input.curves, snakemake.input.fits, snakemake.input.summary, snakemake.output.png)
