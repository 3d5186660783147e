# The paper's figures, one job each so only stale figures redraw, and one self-contained HTML report.
# prh.plan.FIGURES declares each figure's inputs and the config values it reads; the report reads declared files only.


rule figure:
    input:
        unpack(figure_inputs),
    output:
        png=report(
            PATHS.figure("{figure}", "png"),
            caption="../workflow/report/figure.rst",
            category="Figures",
            labels={"figure": "{figure}"},
        ),
        svg=PATHS.figure("{figure}", "svg"),
        csv=PATHS.figure("{figure}", "csv"),
        reading=PATHS.figure("{figure}", "json"),
    log:
        "logs/report/{figure}.log",
    benchmark:
        PATHS.benchmark("figure", "{figure}")
    conda:
        "../envs/prh.yaml"
    params:
        figure=figure_params,
    script:
        "../workflow/scripts/figure.py"


rule report:
    input:
        unpack(report_inputs),
    output:
        html=report(
            PATHS.report(),
            caption="../workflow/report/report.rst",
            category="Report",
        ),
    log:
        "logs/report/report.log",
    benchmark:
        PATHS.benchmark("report", "report")
    conda:
        "../envs/prh.yaml"
    params:
        config=config,
        hub_commits=PLAN.hub_commits,
    script:
        "../workflow/scripts/report.py"
