# Model weights every loading job waits for: the trained zoo (small timm vision models and causal LMs, cached under
# their recipe hash) and the packaged models converted or assembled once into the store (GGUF, split zips).


rule train_zoo_model:
    output:
        receipt=PATHS.zoo("{model}"),
    log:
        "logs/zoo/{model}.log",
    benchmark:
        PATHS.benchmark("train_zoo_model", "{model}")
    priority: model_priority
    conda:
        "../envs/prh.yaml"
    threads: config["threads"]
    resources:
        gpu=gpu_count,
    params:
        spec=model_spec,
        cache=PLAN.zoo_cache(),
        device=config["device"],
        gpus=config["gpus"],
        gpu_wait_s=config["gpu_wait_s"],
    script:
        "../workflow/scripts/train_zoo_model.py"


rule prepare_model:
    output:
        receipt=PATHS.prepared("{model}"),
    log:
        "logs/prepare/{model}.log",
    benchmark:
        PATHS.benchmark("prepare_model", "{model}")
    priority: model_priority
    conda:
        "../envs/prh.yaml"
    threads: 1
    params:
        spec=model_spec,
        store=config["store"],
    script:
        "../workflow/scripts/prepare_model.py"
