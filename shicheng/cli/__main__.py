"""`python -m shicheng.cli …` (e.g. under `accelerate launch`): the same app as the `shicheng` command."""

from shicheng.cli import app

app(prog_name="shicheng")
