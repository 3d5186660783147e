# The colour experiment (the paper's Fig. 8): colour distances from pixel co-occurrence and from language models'
# features of colour names, each against CIELAB; only when config colour.names is set (prh.plan.Plan.colour_tables).


rule colour:
    input:
        unpack(colour_inputs),
    output:
        alignment=PATHS.colour("alignment"),
        layout=PATHS.colour("layout"),
    log:
        "logs/colour/colour.log",
    benchmark:
        PATHS.benchmark("colour", "colour")
    conda:
        "../envs/prh.yaml"
    threads: 1
    params:
        colour=colour_params,
        store=config["store"],
    script:
        "../workflow/scripts/colour.py"
