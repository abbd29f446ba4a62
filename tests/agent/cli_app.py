"""The typer wiring of the agent commands, as shicheng/cli.py has it, for CliRunner tests."""

from pathlib import Path

import typer

from shicheng.agent.cli_commands import bench_tcmcr_command, consult_command, masters_command


def build_app() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True, add_completion=False)
    bench_app = typer.Typer(help="Benchmark exports.", no_args_is_help=True)
    app.add_typer(bench_app, name="bench")

    @app.command("consult")
    def consult_cmd(
        model: str = typer.Option(..., "--model", help="Model directory, or an OpenAI-compatible endpoint URL."),
        master: str = typer.Option(None, "--master", help="Master id (see `shicheng masters`); omit for generic."),
        case: Path = typer.Option(None, "--case", dir_okay=False,
                                  help="Case file: JSON Case, JSONL of Cases (with --case-id), or a text record."),
        text: str = typer.Option(None, "--text", help="Case as text: free text or 主诉：/舌象：/脉象： lines."),
        task: str = typer.Option("full_chain", "--task",
                                 help="full_chain, etiology_pathogenesis, syndrome, treatment_principle, "
                                      "prescription, prescription_explanation, modification, advice."),
        pregnant: bool = typer.Option(False, "--pregnant", help="The patient is pregnant."),
        sex: str = typer.Option(None, "--sex", help="male or female (overrides the case)."),
        age: float = typer.Option(None, "--age", help="Age in years (overrides the case)."),
        as_json: bool = typer.Option(False, "--json", help="Print the Consultation as JSON."),
        backend: str = typer.Option("auto", "--backend", help="auto, transformers or openai."),
        max_new_tokens: int = typer.Option(1024, "--max-new-tokens", min=1),
        temperature: float = typer.Option(0.0, "--temperature", min=0.0),
        case_id: str = typer.Option(None, "--case-id", help="Which case of a multi-case file."),
        visit: int = typer.Option(None, "--visit", min=1, help="Visit to answer, 1-based (default: the last)."),
        model_name: str = typer.Option(None, "--model-name", help="Served model id for an endpoint URL."),
        masters_file: Path = typer.Option(None, "--masters", dir_okay=False,
                                          help="masters.json to use (default: the model directory's)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 …"),
    ) -> None:
        """Answer a case in a master's voice; the prescription is safety-checked and findings shown."""
        consult_command(model, master, case, text, task, pregnant, sex, age, as_json, backend, max_new_tokens,
                        temperature, case_id, visit, model_name, masters_file, device)

    @app.command("masters")
    def masters_cmd(
        model: str = typer.Option(..., "--model", help="Model directory (reads its masters.json)."),
        masters_file: Path = typer.Option(None, "--masters", dir_okay=False, help="A masters.json instead."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """List the masters a trained model knows."""
        masters_command(model, masters_file, as_json)

    @bench_app.command("tcmcr")
    def bench_tcmcr_cmd(
        model: str = typer.Option(..., "--model", help="Model directory, or an OpenAI-compatible endpoint URL."),
        input: Path = typer.Option(..., "--input", exists=True, dir_okay=False,
                                   help="TCMClinicalReason-Bench input JSON (id, instruction, input)."),
        out: Path = typer.Option(..., "--out", dir_okay=False, help="Submission JSON to write."),
        batch_size: int = typer.Option(8, "--batch-size", min=1),
        resume: bool = typer.Option(True, "--resume/--no-resume", help="Skip ids already in OUT.partial.jsonl."),
        backend: str = typer.Option("auto", "--backend", help="auto, transformers or openai."),
        model_name: str = typer.Option(None, "--model-name", help="Served model id for an endpoint URL."),
        max_new_tokens: int = typer.Option(2048, "--max-new-tokens", min=1),
        device: str = typer.Option("auto", "--device"),
    ) -> None:
        """Answer every TCMClinicalReason-Bench case and write its seven-key submission file."""
        bench_tcmcr_command(model, input, out, batch_size, resume, backend, model_name, max_new_tokens, device)

    return app
