# The paper's figures, one job each so only stale figures redraw, and one self-contained HTML report.


rule figure:
    input:
        unpack(figure_inputs),
    output:
        png=report(
            f"{R}/figures/{{figure}}.png",
            caption="../workflow/report/figure.rst",
            category="Figures",
            labels={"figure": "{figure}"},
        ),
        svg=f"{R}/figures/{{figure}}.svg",
        csv=f"{R}/figures/{{figure}}.csv",
        reading=f"{R}/figures/{{figure}}.json",
    log:
        "logs/report/{figure}.log",
    conda:
        "../envs/prh.yaml"
    params:
        report=config["report"],
        alignment=config["alignment"],
        datasets=config["datasets"],
    script:
        "../workflow/scripts/figure.py"


rule report:
    input:
        figures=expand(f"{R}/figures/{{figure}}.png", figure=PLAN.figures()),
        tables=PLAN.tables(),
    output:
        html=report(
            f"{R}/report.html",
            caption="../workflow/report/report.rst",
            category="Report",
        ),
    log:
        "logs/report/report.log",
    conda:
        "../envs/prh.yaml"
    params:
        config=config,
        figures=PLAN.figures(),
    script:
        "../workflow/scripts/report.py"
