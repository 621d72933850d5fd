"""Where the command line writes: results to standard output, progress and errors to standard error."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import typer
from rich import box
from rich.cells import cell_len
from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text
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


def fit(wide: Table, width: int, *, stack: Collection[str] = ()) -> Table:
    """``wide`` as it is if it fits in ``width`` columns; else as ``table`` draws it, each ``stack`` column under
    the one before it (a Korean name under the English one), and every column as wide as its longest word at
    least, wrapping at spaces: nothing is cut to "…"."""
    if Measurement.get(_MEASURE, _MEASURE.options, wide).maximum <= width:
        return wide
    columns = list(wide.columns)
    kept = [i for i, column in enumerate(columns) if str(column.header) not in stack or i == 0]
    groups = [columns[i : kept[n + 1] if n + 1 < len(kept) else len(columns)] for n, i in enumerate(kept)]
    narrow = table(str(wide.title or ""), [])
    narrow.leading = 1 if stack else 0  # stacked cells take two lines or more: a blank line between rows
    headers = ["\n".join(str(c.header) for c in group) for group in groups]
    texts = [
        [_text(cell) for c in group for cell in c.cells] + [header]
        for group, header in zip(groups, headers, strict=True)
    ]
    least = [max((cell_len(word) for text in group for word in text.split()), default=1) for group in texts]
    most = [max((cell_len(line) for text in group for line in text.splitlines()), default=1) for group in texts]
    available = width - 2 * (len(groups) - 1)  # two spaces between columns
    room = available - sum(least)
    if room < 0:  # even the longest words do not fit side by side: those columns fold them
        least = [max(1, low * available // sum(least)) for low in least]
        room = 0
    wanted = sum(max(0, m - s) for m, s in zip(most, least, strict=True)) or 1
    for group, header, low, high in zip(groups, headers, least, most, strict=True):
        share = low + room * max(0, high - low) // wanted
        narrow.add_column(header, justify=group[0].justify, overflow="fold", width=share)
    cells = [list(column.cells) for column in columns]
    for row in range(wide.row_count):
        line: list[RenderableType] = []
        for group in groups:
            parts = [cells[columns.index(c)][row] for c in group]
            parts = [p for p in parts if p != ""]
            line.append("\n".join(parts) if all(isinstance(p, str) for p in parts) else Group(*parts))  # type: ignore[arg-type]
        narrow.add_row(*line)
    return narrow


def _text(cell: RenderableType) -> str:
    return Text.from_markup(cell).plain if isinstance(cell, str) else str(cell)


_MEASURE = Console(width=10_000)  # measures a table at its natural width


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
