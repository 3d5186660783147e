# Datasets, materialised once per spec: real Fashion-MNIST / digits / WordNet text, generated scenes, hub data.


rule dataset:
    output:
        npz=f"{R}/data/{{dataset}}.npz",
    log:
        "logs/data/{dataset}.log",
    params:
        spec=dataset_spec,
    conda:
        "../envs/prh.yaml"
    threads: 1
    script:
        "../workflow/scripts/dataset.py"
