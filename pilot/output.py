"""Where the command line writes: results to standard output, progress and errors to standard error."""

from __future__ import annotations

import typer
from rich.console import Console

console = Console()
errors = Console(stderr=True, soft_wrap=True)  # an error line stays whole, for grep and editors


def fail(message: str) -> typer.Exit:
    """Print ``message`` as an error; raise what this returns to exit with status 1."""
    errors.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(1)
