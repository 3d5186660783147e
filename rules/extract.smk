# One job per (model, dataset): layer-wise pooled features into the content-addressed store.
# The output is a small receipt naming the store key, so DAG staleness and content addressing agree.


rule extract:
    input:
        data=PATHS.data("{dataset}"),
        model=model_receipt,
    output:
        receipt=PATHS.receipt("{dataset}", "{model}"),
    log:
        "logs/extract/{dataset}/{model}.log",
    benchmark:
        PATHS.benchmark("extract", "{dataset}", "{model}")
    priority: extract_priority
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
        extraction=extraction_params,
        batch_size=extraction_batch_size,
        store=config["store"],
        device=config["device"],
        gpu=gpu_settings,
    script:
        "../workflow/scripts/extract.py"
