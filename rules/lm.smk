# Language competence: bits-per-byte on held-out text and downstream multiple-choice accuracy.


rule score_language_model:
    input:
        unpack(lm_inputs),
    output:
        scores=PATHS.lm("{model}"),
    log:
        "logs/lm/{model}.log",
    benchmark:
        PATHS.benchmark("score_language_model", "{model}")
    priority: 1  # a long job: started early, not left to the end (prh.plan.Plan.priority)
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
        max_chars=config["language"]["max_chars"],
        downstream=config["language"]["downstream"],
        store=config["store"],
        device=config["device"],
        gpu=gpu_settings,
    script:
        "../workflow/scripts/score_language_model.py"


rule language_table:
    input:
        scores=[PATHS.lm(m) for m in PLAN.language_models()],
    output:
        table=report(
            PATHS.lm_table(),
            caption="../workflow/report/lm_scores.rst",
            category="Competence",
        ),
    log:
        "logs/lm/table.log",
    conda:
        "../envs/prh.yaml"
    params:
        published=config["language"]["published_scores"],
    script:
        "../workflow/scripts/language_table.py"
