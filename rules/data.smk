# Datasets, materialised once per spec: real Fashion-MNIST / digits / WordNet text, generated scenes, hub data.


rule dataset:
    output:
        npz=f"{R}/data/{{dataset}}.npz",
    log:
        "logs/data/{dataset}.log",
    conda:
        "../envs/prh.yaml"
    threads: 1
    params:
        spec=dataset_spec,
    script:
        "../workflow/scripts/dataset.py"
