import json

from typer.testing import CliRunner

from shicheng.cli import app

runner = CliRunner()


def test_check_prescription_json():
    res = runner.invoke(app, ["check-prescription", "甘草6g 海藻15g 水蛭3g", "--pregnant", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert [h["base"] for h in out["herbs"]] == ["甘草", "海藻", "水蛭"]
    assert set(out["herbs"][0]) >= {"raw", "name", "base", "processing", "dose", "unit", "grams", "note"}
    assert {f["rule"] for f in out["findings"]} >= {"十八反", "妊娠禁用"}
    assert all(set(f) >= {"level", "rule", "herbs", "message"} for f in out["findings"])
    assert out["unparsed"] == []


def test_check_prescription_table_and_file(tmp_path):
    f = tmp_path / "rx.txt"
    f.write_text("附子30g(先煎) 法半夏9g", encoding="utf-8")
    res = runner.invoke(app, ["check-prescription", "--file", str(f)])
    assert res.exit_code == 0
    assert "十八反" in res.output and "ERROR" in res.output and "WARNING" in res.output


def test_check_prescription_needs_text():
    res = runner.invoke(app, ["check-prescription", "--json"], input="")
    assert res.exit_code == 2 and "No prescription text" in res.output


def test_herb_command():
    res = runner.invoke(app, ["herb", "云苓", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["base"] == "茯苓"
    assert runner.invoke(app, ["herb", "不存在的药"]).exit_code == 1


def _command_paths(typer_app, prefix=()):
    """Every registered command, sub-apps included, as the argv that names it."""
    for info in typer_app.registered_commands:
        yield (*prefix, info.name or info.callback.__name__.replace("_", "-"))
    for group in typer_app.registered_groups:
        yield from _command_paths(group.typer_instance, (*prefix, group.name))


def test_every_command_has_help():
    paths = list(_command_paths(app))
    assert {("consult",), ("serve",), ("masters",), ("check-prescription",), ("tcmcr",)} <= set(paths)
    for path in [(), *paths]:
        res = runner.invoke(app, [*path, "--help"])
        assert res.exit_code == 0, (path, res.output)
        assert "Usage" in res.output


def test_consult_and_serve_help_show_the_new_options():
    consult = runner.invoke(app, ["consult", "--help"], env={"COLUMNS": "200"}).output
    assert "--previous-prescription" in consult and "--not-pregnant" in consult
    serve = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    assert "--insecure" in serve and "--no-chat-safety-notice" in serve


def test_each_command_lives_in_the_module_of_its_step():
    where = {info.name: info.callback.__module__ for info in app.registered_commands}
    expected = {"check-prescription": "knowledge", "herb": "knowledge", "demo-data": "curate", "curate": "curate",
                "train": "train", "compare-stages": "evaluate", "consult": "agent", "masters": "agent",
                "tcmcr": "agent", "serve": "serve"}
    assert {name: where.get(name) for name in expected} == {n: f"shicheng.cli.{m}" for n, m in expected.items()}
    # one group only: the rating app's coordinator and server commands (`shicheng rate serve`, issue 12); the
    # TCMCR export is `shicheng tcmcr`, not `shicheng bench tcmcr`
    groups = {g.name: g.typer_instance for g in app.registered_groups}
    assert list(groups) == ["rate"]
    assert {c.callback.__module__ for c in groups["rate"].registered_commands} == {"shicheng.cli.rate"}
    assert where.get("reliability") == "shicheng.cli.rate"
    res = runner.invoke(app, ["bench", "tcmcr", "--help"])
    assert res.exit_code == 2 and "No such command 'bench'" in res.output
