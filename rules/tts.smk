# Test-time scaling of alignment (issue 35; prh.tts, docs/test-time-scaling.md), on when config tts.datasets is set:
# one job per (dataset, model, axis) puts one store entry per caption / view and one per pooled size c / v into the
# store (a size already there is not recomputed); one job per dataset scores, fits and tests; one draws the figure.


rule tts_features:
    input:
        data=PATHS.data("{dataset}"),
        model=model_receipt,
    output:
        receipt=PATHS.tts_features("{dataset}", "{model}", "{axis}"),
    log:
        "logs/tts/{dataset}/{axis}/{model}.log",
    benchmark:
        PATHS.benchmark("tts_features", "{dataset}", "{axis}", "{model}")
    wildcard_constraints:
        axis="captions|prompt|views",
    conda:
        "../envs/prh.yaml"
    threads: config["threads"]
    resources:
        gpu=gpu_count,
        gpu_mem_mb=gpu_mem_mb,
        mem_mb=extract_mem_mb,
        runtime=extract_runtime,
    params:
        spec=model_spec,
        extraction=tts_params,
        sizes=tts_sizes,
        view_seed=config["tts"]["view_seed"],
        batch_size=extraction_batch_size,
        store=config["store"],
        device=config["device"],
        gpu=gpu_settings,
    script:
        "../workflow/scripts/tts_features.py"


rule tts_score:
    input:
        receipts=tts_receipts,
    output:
        curves=PATHS.tts_table("{dataset}", "curves"),
        fits=PATHS.tts_table("{dataset}", "fits"),
        summary=PATHS.tts_table("{dataset}", "summary"),
    log:
        "logs/tts/{dataset}/score.log",
    benchmark:
        PATHS.benchmark("tts_score", "{dataset}")
    conda:
        "../envs/prh.yaml"
    threads: config["threads"]
    params:
        settings=PLAN.tts_settings(),
        store=config["store"],
    script:
        "../workflow/scripts/tts_score.py"


rule tts_figure:
    input:
        curves=PATHS.tts_table("{dataset}", "curves"),
        fits=PATHS.tts_table("{dataset}", "fits"),
        summary=PATHS.tts_table("{dataset}", "summary"),
    output:
        png=report(
            PATHS.tts_figure("{dataset}", "png"),
            caption="../workflow/report/figure.rst",
            category="Test-time scaling",
            labels={"dataset": "{dataset}"},
        ),
        svg=PATHS.tts_figure("{dataset}", "svg"),
        csv=PATHS.tts_figure("{dataset}", "csv"),
        reading=PATHS.tts_figure("{dataset}", "json"),
    log:
        "logs/tts/{dataset}/figure.log",
    conda:
        "../envs/prh.yaml"
    script:
        "../workflow/scripts/tts_figure.py"
