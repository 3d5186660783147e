# VTAB-style competence: linear probes on stored features; solved = accuracy >= threshold x best model.


rule probe:
    input:
        receipts=probe_inputs,
    output:
        table=f"{R}/probes/models/{{model}}.csv",
    log:
        "logs/probe/{model}.log",
    conda:
        "../envs/prh.yaml"
    threads: 1
    params:
        tasks=config["probes"]["tasks"],
        layer=config["probes"]["layer"],
        max_train=config["probes"]["max_train"],
        store=config["store"],
        data=f"{R}/data",
    script:
        "../workflow/scripts/probe.py"


rule probe_summary:
    input:
        tables=expand(f"{R}/probes/models/{{model}}.csv", model=PLAN.probe_models()),
    output:
        accuracy=f"{R}/probes/accuracy.csv",
        solved=report(
            f"{R}/probes/solved.csv",
            caption="../workflow/report/solved.rst",
            category="Competence",
        ),
        tasks_solved=f"{R}/probes/tasks_solved.csv",
    log:
        "logs/probe/summary.log",
    conda:
        "../envs/prh.yaml"
    params:
        threshold=config["probes"]["threshold"],
    script:
        "../workflow/scripts/probe_summary.py"
