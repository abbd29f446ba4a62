"""`shicheng` command line: one module per step of the pipeline, assembled here into one typer app.

    knowledge  check-prescription, herb          curate    demo-data, curate
    train      train                             evaluate  compare-stages, predict, evaluate
    agent      consult, masters, tcmcr           serve     serve
    rate       rate …, reliability            deploy    export

Each module holds typed command functions whose bodies call the library with keyword arguments; the
heavy parts (curation, training, models, the server) are imported only by the command that needs them.
"""

from __future__ import annotations

import typer

from shicheng.cli import agent, curate, deploy, evaluate, knowledge, rate, serve, train
from shicheng.domain import DISCLAIMER

app = typer.Typer(
    help="师承 shicheng: curate a master physician's records, train one small model in five stages, serve and "
         "evaluate it. " + DISCLAIMER,
    no_args_is_help=True,
    add_completion=False,
)

# Pipeline order, which is also the order of `shicheng --help`.
app.command("check-prescription")(knowledge.check_prescription_cmd)
app.command("herb")(knowledge.herb_cmd)
app.command("demo-data")(curate.demo_data_cmd)
app.command("curate")(curate.curate_cmd)
app.command("train")(train.train_cmd)
app.command("compare-stages")(evaluate.compare_stages_cmd)
app.command("predict")(evaluate.predict_cmd)
app.command("evaluate")(evaluate.evaluate_cmd)
app.command("consult")(agent.consult_cmd)
app.command("masters")(agent.masters_cmd)
app.command("tcmcr")(agent.tcmcr_cmd)
app.command("serve")(serve.serve_cmd)
app.command("export")(deploy.export_cmd)
app.add_typer(rate.rate_app, name="rate")
app.command("reliability")(rate.reliability_cmd)


def main() -> None:  # pragma: no cover - console entry
    app()


__all__ = ["app", "main"]
