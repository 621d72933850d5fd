"""Where the command line writes: results to standard output, progress and errors to standard error."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import typer
from rich import box
from rich.console import Console, JustifyMethod
from rich.table import Table
from typer.core import TyperOption

console = Console()
errors = Console(stderr=True, soft_wrap=True)  # an error line stays whole, for grep and editors


def fail(message: str) -> typer.Exit:
    """Print ``message`` as an error; raise what this returns to exit with status 1."""
    errors.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(1)


def table(title: str, columns: Iterable[str], *, whole: Collection[str] = (), right: Collection[str] = ()) -> Table:
    """A table that reads in an 80-column terminal: a rule under the header and two spaces between columns
    instead of a box, and a value too wide for its column wraps at spaces, or breaks, but is never cut to "…".
    The ``whole`` columns never wrap (ids, numbers); the ``right`` ones are right-aligned."""
    made = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True
    )
    for column in columns:
        justify: JustifyMethod = "right" if column in right else "left"
        made.add_column(column, no_wrap=column in whole, overflow="fold", justify=justify)
    return made


def _flags_show_no_type() -> None:
    """typer 0.27 and later write a type after every option in help, flags too (`--help <bool>`); a flag takes no
    value, so it gets none, as in click's plain help."""
    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "flags_show_no_type", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    display_type_rich.flags_show_no_type = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_show_no_type()
