# Fan-in alignment: one job per experiment scores every model pair over all layer pairs,
# with per-pair scores memoised in the store so a new model computes only its new pairs.


rule align:
    input:
        receipts=experiment_receipts,
    output:
        table=report(
            PATHS.alignment("{experiment}"),
            caption="../workflow/report/alignment.rst",
            category="Alignment",
            labels={"experiment": "{experiment}"},
        ),
        matrices=directory(PATHS.matrices("{experiment}")),
    log:
        "logs/align/{experiment}.log",
    benchmark:
        PATHS.benchmark("align", "{experiment}")
    priority: align_priority
    conda:
        "../envs/prh.yaml"
    threads: config["threads"]
    params:
        experiment=experiment_spec,
        xs=experiment_xs,
        ys=experiment_ys,
        receipt_map=experiment_receipt_map,
        q=config["alignment"]["q"],
        permutations=config["alignment"]["permutations"],
        bootstrap=config["alignment"]["bootstrap"],
        alpha=config["alignment"]["alpha"],
        seed=config["alignment"]["seed"],
        store=config["store"],
        device=align_device,
    script:
        "../workflow/scripts/align.py"


rule model_table:
    input:
        receipts=PLAN.model_receipts(),
    output:
        table=PATHS.models_table(),
    log:
        "logs/align/models.log",
    conda:
        "../envs/prh.yaml"
    params:
        models=config["models"],
    script:
        "../workflow/scripts/model_table.py"
