# The trained zoo: small timm vision models and causal LMs, cached under their recipe hash.


rule train_zoo_model:
    output:
        receipt=PATHS.zoo("{model}"),
    log:
        "logs/zoo/{model}.log",
    benchmark:
        PATHS.benchmark("train_zoo_model", "{model}")
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
    script:
        "../workflow/scripts/train_zoo_model.py"
