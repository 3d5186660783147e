"""Linear probes of one model on every task (see prh.pipeline.probe_model)."""

from prh.pipeline import logged, probe_model

with logged(snakemake.log[0]):
    probe_model(
        snakemake.wildcards.model,
        list(snakemake.input.receipts),
        list(snakemake.input.data),
        snakemake.params.tasks,
        snakemake.params.layer,
        snakemake.params.max_train,
        snakemake.params.store,
        snakemake.output.table,
    )
