"""Bits-per-byte and downstream accuracy of one language model (see prh.pipeline.score_language_model)."""

from prh.pipeline import logged, score_language_model
from prh.runtime import prepare_job

with logged(snakemake.log[0]):
    prepare_job(snakemake.threads)
    score_language_model(
        snakemake.wildcards.model,
        snakemake.params.spec,
        list(snakemake.input.model),
        list(snakemake.input.corpus),
        snakemake.params.max_chars,
        snakemake.params.downstream,
        snakemake.output.scores,
        snakemake.params.store,
        device=snakemake.params.device,
        n_gpus=snakemake.resources.gpu,
        gpu=snakemake.params.gpu,
    )
