"""Score every model pair of one experiment (see prh.experiment.align_experiment)."""

from prh.pipeline import align_job, logged
from prh.runtime import prepare_job

with logged(snakemake.log[0]):
    prepare_job(snakemake.threads)
    align_job(
        snakemake.params.experiment,
        snakemake.params.xs,
        snakemake.params.ys,
        snakemake.params.receipt_map,
        snakemake.params.store,
        snakemake.params.q,
        dict(permutations=snakemake.params.permutations, bootstrap=snakemake.params.bootstrap,
             alpha=snakemake.params.alpha, seed=snakemake.params.seed),
        snakemake.output.table,
        snakemake.output.matrices,
        snakemake.params.device,
    )
