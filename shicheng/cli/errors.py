"""How a command that asks a model ends on bad input: status 2 and one line that names what was wrong;
status 1 when the endpoint fails (not the user's input)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.text import Text


@contextmanager
def clear_errors(console: Console) -> Iterator[None]:
    """Turn the agent's input errors into exit status 2 and endpoint failures into status 1, each with a
    one-line message (as Text: a path or a model's message may hold [brackets])."""
    # Imported here: the openai client takes about a second to import, and `shicheng --help` needs none of it.
    from openai import OpenAIError

    from shicheng.agent import BackendUnavailable, ConsultError
    from shicheng.agent.tcmcr import BenchInputError

    try:
        yield
    except (ConsultError, BenchInputError, FileNotFoundError, ValueError, BackendUnavailable) as e:
        console.print(Text(f"error: {e}", style="red"), soft_wrap=True)
        raise typer.Exit(2) from e
    except OpenAIError as e:
        console.print(Text(f"endpoint error: {type(e).__name__}: {e}", style="red"), soft_wrap=True)
        raise typer.Exit(1) from e
