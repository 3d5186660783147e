# Datasets, materialised once per spec: real Fashion-MNIST / digits / WordNet text, generated scenes, hub data.


rule dataset:
    output:
        npz=PATHS.data("{dataset}"),
    log:
        "logs/data/{dataset}.log",
    benchmark:
        PATHS.benchmark("dataset", "{dataset}")
    conda:
        "../envs/prh.yaml"
    threads: 1
    resources:
        mem_mb=dataset_mem_mb,
        runtime=dataset_runtime,
    params:
        spec=dataset_spec,
    script:
        "../workflow/scripts/dataset.py"
