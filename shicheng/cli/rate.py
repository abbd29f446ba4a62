"""`shicheng rate …` (the physician rating app and its coordinator commands) and `shicheng reliability`.

    shicheng rate create-study --db runs/rate/ratings.db --name pilot --cases runs/demo/data/cases/test.jsonl \
        --predictions runs/demo/eval/stage-5.jsonl --predictions runs/demo/eval/gold.jsonl
    shicheng rate add-raters --db runs/rate/ratings.db --study pilot --file raters.csv
    shicheng rate assign --db runs/rate/ratings.db --study pilot --k 3
    shicheng rate issue-logins --db runs/rate/ratings.db --study pilot --base-url http://10.0.0.5:8400
    shicheng rate serve --db runs/rate/ratings.db --port 8400
    shicheng rate export --db runs/rate/ratings.db --study pilot --out runs/rate/ratings.csv
    shicheng reliability --ratings runs/rate/ratings.csv --judge-scores runs/eval/results.json --out runs/reliability

Imports of the `rate` extra (sqlalchemy, fastapi, pingouin) happen inside the commands, so that
`shicheng --help` needs none of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console()
rate_app = typer.Typer(help="Physician rating app: create a study from `shicheng predict` files, register raters "
                            "of each master's lineage, assign, issue logins, serve, watch progress, export.",
                       no_args_is_help=True)

DB = typer.Option("runs/rate/ratings.db", "--db", help="SQLite file, or a postgresql:// URL.")
STUDY = typer.Option(..., "--study", help="Study name.")


@contextmanager
def _clear() -> Iterator[None]:
    try:
        yield
    except (ValueError, FileNotFoundError) as e:
        console.print(Text(f"error: {e}", style="red"), soft_wrap=True)
        raise typer.Exit(2) from e


def _store(db: str):
    from shicheng.rate.db import Store

    return Store(db)


@rate_app.command("create-study")
def create_study_cmd(db: str = DB, name: str = typer.Option(..., "--name", help="A new study's name."),
                     cases: Path = typer.Option(..., "--cases", help="The cases JSONL the predictions answer "
                                                "(cases/test.jsonl of `shicheng curate`)."),
                     predictions: list[Path] = typer.Option(..., "--predictions", help="A `shicheng predict` "
                                                            "JSONL; repeat for each system."),
                     masters: Path = typer.Option(None, "--masters", help="Masters file or folder (display names; "
                                                  "default: masters/ beside the curated cases)."),
                     seed: int = typer.Option(0, "--seed", help="Seed of the per-case letter shuffle.")) -> None:
    """Create a study: one item per answer in the predictions files (failed generations left out)."""
    from shicheng.rate.study import create_study

    with _clear():
        out = create_study(_store(db), name, cases=cases, predictions=predictions, seed=seed, masters_file=masters)
    console.print_json(json.dumps(out, ensure_ascii=False))


@rate_app.command("add-raters")
def add_raters_cmd(db: str = DB, study: str = STUDY,
                   file: Path = typer.Option(None, "--file", help="CSV: login, lineage (master ids joined by ';'), "
                                             "credential, name."),
                   login: str = typer.Option(None, "--login", help="One rater's login (instead of --file)."),
                   lineage: list[str] = typer.Option(None, "--lineage", help="A master the rater trained under; "
                                                     "repeat for several."),
                   credential: str = typer.Option("", "--credential", help="e.g. 主任医师."),
                   name: str = typer.Option("", "--name", help="Display name.")) -> None:
    """Register raters of a study with their lineage and credential."""
    from shicheng.rate.study import add_rater, add_raters_file

    with _clear():
        store = _store(db)
        if file:
            n = add_raters_file(store, study, file)
        elif login:
            add_rater(store, study, login=login, lineage=lineage or [], credential=credential, display_name=name)
            n = 1
        else:
            raise ValueError("give --file or --login")
    console.print(f"{n} rater(s) added to {study}")


@rate_app.command("add-coordinator")
def add_coordinator_cmd(db: str = DB, login: str = typer.Option(..., "--login"),
                        password_env: str = typer.Option("SHICHENG_COORDINATOR_PASSWORD", "--password-env",
                                                         help="Environment variable holding the password.")) -> None:
    """A coordinator account for the progress and export pages."""
    import os

    from shicheng.rate.study import add_coordinator

    with _clear():
        pw = os.environ.get(password_env)
        if not pw:
            raise ValueError(f"set the password in ${password_env}")
        add_coordinator(_store(db), login, pw)
    console.print(f"coordinator {login} added")


@rate_app.command("assign")
def assign_cmd(db: str = DB, study: str = STUDY,
               k: int = typer.Option(3, "--k", min=1, help="Raters per answer, all of the answer's master's lineage."),
               seed: int = typer.Option(0, "--seed"),
               repeat_share: float = typer.Option(0.1, "--repeat-share", help="Share of each rater's answers shown "
                                                  "again later (hidden), for self-consistency."),
               replace: bool = typer.Option(False, "--replace", help="Replace an assignment nobody has rated yet.")
               ) -> None:
    """Balanced, seeded assignment of answers to raters of the right lineage."""
    from shicheng.rate.assign import assign

    with _clear():
        out = assign(_store(db), study, k=k, seed=seed, repeat_share=repeat_share, replace=replace)
    console.print_json(json.dumps(out, ensure_ascii=False))


@rate_app.command("issue-logins")
def issue_logins_cmd(db: str = DB, study: str = STUDY,
                     base_url: str = typer.Option("http://127.0.0.1:8400", "--base-url", help="Where raters reach "
                                                  "the server."),
                     passwords: bool = typer.Option(False, "--passwords", help="New random passwords instead of "
                                                    "one-time links."),
                     out: Path = typer.Option(None, "--out", help="Write the logins as JSON here (keep it private).")
                     ) -> None:
    """One-time login links (or passwords) for every rater; earlier links stop working."""
    from shicheng.rate.assign import issue_logins

    with _clear():
        rows = issue_logins(_store(db), study, base_url=base_url, passwords=passwords)
    if out:
        out.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
        console.print(f"{len(rows)} login(s) written to {out}")
    else:
        console.print_json(json.dumps(rows, ensure_ascii=False))


@rate_app.command("progress")
def progress_cmd(db: str = DB, study: str = STUDY,
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """Per rater: answers assigned, rated, time spent."""
    from shicheng.rate.study import progress

    with _clear():
        rows = progress(_store(db), study)
    if as_json:
        console.print_json(json.dumps(rows, ensure_ascii=False))
        return
    table = Table("rater", "lineage", "assigned", "rated", "minutes")
    for r in rows:
        table.add_row(r["rater"], ";".join(r["lineage"]), str(r["assigned"]), str(r["rated"]), str(r["minutes"]))
    console.print(table)


@rate_app.command("export")
def export_cmd(db: str = DB, study: str = STUDY,
               out: Path = typer.Option(..., "--out", help="ratings.csv or ratings.jsonl (long format).")) -> None:
    """Long-format export: one row per rating and dimension, plus its weighted total."""
    from shicheng.rate.export import write_export

    with _clear():
        n = write_export(_store(db), study, out)
    console.print(f"{n} row(s) written to {out}")


@rate_app.command("serve")
def serve_cmd(db: str = DB, host: str = typer.Option("127.0.0.1", "--host"), port: int = typer.Option(8400, "--port"),
              session_hours: float = typer.Option(2.0, "--session-hours", help="Idle time before a session expires."),
              secure_cookies: bool = typer.Option(False, "--secure-cookies", help="Set when served over HTTPS.")
              ) -> None:
    """Serve the rating pages (raters) and the progress page (coordinators)."""
    import uvicorn

    from shicheng.rate.app import create_app

    with _clear():
        app = create_app(db, session_ttl_s=session_hours * 3600, secure_cookies=secure_cookies)
    uvicorn.run(app, host=host, port=port, log_level="info")


def reliability_cmd(ratings: Path = typer.Option(..., "--ratings", help="The export of `shicheng rate export`."),
                    judge_scores: Path = typer.Option(..., "--judge-scores", help="results.json of `shicheng "
                                                      "evaluate` (run with a judge)."),
                    out: Path = typer.Option(..., "--out", help="Folder for results.json and report.html."),
                    n_boot: int = typer.Option(1000, "--n-boot", min=0), seed: int = typer.Option(0, "--seed")) -> None:
    """Inter-rater agreement, self-consistency and judge-vs-physician agreement (per master Bland–Altman)."""
    from shicheng.rate.reliability import reliability

    with _clear():
        res = reliability(ratings=ratings, judge_scores=judge_scores, out=out, n_boot=n_boot, seed=seed)
    console.print(f"wrote {res.results_path} and {res.report_path}")


__all__ = ["rate_app", "reliability_cmd"]
