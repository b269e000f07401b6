"""docs/performance.md's benchmark commands, run as written at the sizes written.

Each ```bash block of the page runs as one test, its command lines taken from the
page; each line must exit 0, and a command whose output the page records must
print the same tables: the same column headers and the same row labels in the same
order. The figures are never compared (they are this machine's, at one moment).
A recorded output belongs to the last `skillmeat-db ...` named in the prose above it,
or else to the command block just above it.

About 14 minutes on the 2-core machine the page was measured on (the page's
"Reproduce" section lists each command's time). `-m "not bench"` leaves them out.
"""

import contextlib
import re
import shlex
from dataclasses import dataclass

import pytest
from sqlalchemy.engine import URL

from tests.doc_commands import docs_server, new_database, shell
from tests.docblocks import ROOT, Block, blocks_for, parse

RUNNER = "tests/test_docs_bench.py::test_bench_commands_as_written"
DOC = "docs/performance.md"
COMMAND_BLOCKS = [b for b in blocks_for(RUNNER) if b.lang == "bash"]
_RULE = re.compile(r"^[-─ ]+$")


def fields(line: str) -> list[str]:
    """A table line's cells: text separated by two spaces or more."""
    return re.split(r" {2,}", line.strip())


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    labels: tuple[str, ...]  # each row's first cell


def tables(output: str) -> list[Table]:
    """The tables in a command's output: a header line of three cells or more, an
    optional rule, then the rows with as many cells as the header."""
    lines = [line for line in output.splitlines() if not _RULE.match(line)]
    found = []
    i = 0
    while i < len(lines):
        header = fields(lines[i])
        rows = []
        j = i + 1
        while len(header) >= 3 and j < len(lines) and len(fields(lines[j])) == len(header):
            rows.append(fields(lines[j])[0])
            j += 1
        if rows:
            found.append(Table(tuple(header), tuple(rows)))
            i = j
        else:
            i += 1
    return found


def subcommand(command: str) -> str:
    """`skillmeat-db [--url URL] bench queries --keep x` -> "bench queries"."""
    words = shlex.split(command)
    if words[:1] != ["skillmeat-db"]:
        return words[0]
    words = words[3:] if words[1:2] == ["--url"] else words[1:]
    return " ".join(words[:2] if words[0] == "bench" else words[:1])


def recorded_outputs() -> dict[str, list[Block]]:
    """The page's recorded outputs by the subcommand that printed them."""
    text = (ROOT / DOC).read_text().splitlines()
    blocks = parse(DOC)
    outputs: dict[str, list[Block]] = {}
    for k, block in enumerate(blocks):
        if block.lang not in ("text", "") or k == 0:
            continue
        before = blocks[k - 1]
        closing = before.line + len(before.text.splitlines()) + 1
        prose = "\n".join(text[closing : block.line - 1])
        named = re.findall(r"`(skillmeat-db [^`]+)`", prose)
        if named:
            outputs.setdefault(subcommand(named[-1]), []).append(block)
        elif before.lang == "bash":
            last = [c for c in before.commands() if c.startswith("skillmeat-db")][-1]
            outputs.setdefault(subcommand(last), []).append(block)
    return outputs


RECORDED = recorded_outputs()


def test_the_recorded_outputs_are_found_and_have_tables() -> None:
    """The pairing above, on the page as it is: every recorded table belongs to a
    command the page's blocks run."""
    run = {subcommand(c) for b in COMMAND_BLOCKS for c in b.commands()}
    assert set(RECORDED) <= run, (set(RECORDED), run)
    assert {"bench queries", "explain", "bench requests", "bench sync"} <= set(RECORDED)
    for name, blocks in RECORDED.items():
        for block in blocks:
            assert tables(block.text), f"{block}: no table found in the output of {name}"


def test_tables_are_read_as_cells() -> None:
    out = (
        "title with 2,000 figures\n\n"
        "path   query          RLS ms   met\n"
        "────────────────────────────────────\n"
        "1      a, b: c          0.2    yes\n"
        "3b     d                1.0    no\n"
        "met  a verdict line\n"
    )
    assert tables(out) == [Table(("path", "query", "RLS ms", "met"), ("1", "3b"))]


@pytest.mark.bench
@pytest.mark.parametrize("block", COMMAND_BLOCKS, ids=[b.section for b in COMMAND_BLOCKS])
def test_bench_commands_as_written(block: Block, pg_server_url: URL) -> None:
    server = docs_server(pg_server_url)
    commands = block.commands()
    # databases the block creates by name (and drops first): none may be a developer's
    kept = [shlex.split(c)[-1] for c in commands if c.startswith("dropdb ")]
    kept += [m for c in commands for m in re.findall(r"--keep (\w+)", c) if m not in kept]
    with contextlib.ExitStack() as stack:
        for name in kept:
            stack.enter_context(new_database(server, name))
        for command in commands:
            result = shell(command, url=server, timeout=1800)
            assert result.returncode == 0, (command, result.stdout[-3000:], result.stderr[-3000:])
            assert "Traceback" not in result.stderr, result.stderr
            got = tables(result.stdout)
            for recorded in RECORDED.get(subcommand(command), []):
                missing = [t for t in tables(recorded.text) if t not in got]
                assert not missing, (
                    f"{command}: tables of {recorded} not in its output: {missing}\n{result.stdout}"
                )
