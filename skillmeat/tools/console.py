"""rich output for `skillmeat-db`: tables on stdout, progress bars on stderr."""

import io
import time
from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

# Tables are rendered to text first (the commands print lines), each at its natural
# width: rich fits a table into the console's width by cutting cells and headers
# ("pa…" for "path" once explain's check column held a long message), so the console
# is wider than any table.
_TABLE_WIDTH = 100_000


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A rich table as text: text columns left-aligned, numbers right-aligned."""
    numeric = [all(isinstance(row[i], int | float) for row in rows) for i in range(len(headers))]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header, is_number in zip(headers, numeric, strict=True):
        table.add_column(header, justify="right" if is_number else "left", no_wrap=True)
    for row in rows:
        table.add_row(*(_cell(value) for value in row))
    buffer = io.StringIO()
    Console(file=buffer, width=_TABLE_WIDTH, color_system=None, highlight=False).print(table)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines() if line.strip())


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


class ProgressBar:
    """A rich progress bar on stderr, fed as progress(done, total, step)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.monotonic()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[step]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True, highlight=False),
        )
        self.task = self.progress.add_task(label, total=None, step="")
        self.progress.start()

    def __call__(self, done: int, total: int, step: str) -> None:
        self.progress.update(self.task, completed=done, total=total, step=step)

    def close(self, note: str) -> None:
        self.progress.stop()
        elapsed = time.monotonic() - self.started
        self.progress.console.print(f"{self.label}: done in {elapsed:.1f} s ({note})")
