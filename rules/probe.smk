# VTAB-style competence: linear probes on stored features; solved = accuracy >= threshold x best model.


rule probe:
    input:
        unpack(probe_inputs),
    output:
        table=PATHS.probe("{model}"),
    log:
        "logs/probe/{model}.log",
    benchmark:
        PATHS.benchmark("probe", "{model}")
    conda:
        "../envs/prh.yaml"
    threads: 1
    params:
        tasks=config["probes"]["tasks"],
        layer=config["probes"]["layer"],
        max_train=config["probes"]["max_train"],
        store=config["store"],
    script:
        "../workflow/scripts/probe.py"


rule probe_summary:
    input:
        tables=[PATHS.probe(m) for m in PLAN.probe_models()],
    output:
        accuracy=PATHS.probe_table("accuracy"),
        solved=report(
            PATHS.probe_table("solved"),
            caption="../workflow/report/solved.rst",
            category="Competence",
        ),
        tasks_solved=PATHS.probe_table("tasks_solved"),
    log:
        "logs/probe/summary.log",
    conda:
        "../envs/prh.yaml"
    params:
        threshold=config["probes"]["threshold"],
    script:
        "../workflow/scripts/probe_summary.py"
