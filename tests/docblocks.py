"""Every fenced block of README.md and docs/*.md, and the test that runs it.

A block is a command or code unless its info string says it is something else
(NOT_RUN). CLAIMS maps (document, section, language) to the test that runs those
blocks; each runner takes its blocks from `blocks_for`, so a new block in a claimed
section is run with its neighbours, and a new block anywhere else turns
tests/test_docs_inventory.py red until a test runs it.
"""

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")))

# Info strings for what is not a program. Anything else is run by a test.
NOT_RUN = {
    "text": "recorded output of a command (its figures change from run to run); where a "
    "test runs the command it compares the output's shape with this block, never the figures",
    "mermaid": "a diagram that GitHub renders; there is nothing to run",
}


@dataclass(frozen=True)
class Claim:
    doc: str
    lang: str
    section: str | None  # the nearest heading above the block; None: any section
    runner: str  # "tests/<file>.py::<test or fixture that runs the blocks>"


CLAIMS = (
    Claim("README.md", "bash", "Quickstart", "tests/test_docs.py::test_readme_quickstart"),
    Claim("README.md", "bash", "Another database", "tests/test_docs.py::test_database_commands"),
    Claim("docs/migrations.md", "bash", "Deploy", "tests/test_docs.py::test_database_commands"),
    Claim(
        "docs/migrations.md",
        "bash",
        "Adding a revision",
        "tests/test_migration_recipe.py::test_the_value_set_recipe_passes_lint_types_and_migration_tests",
    ),
    Claim(
        "docs/migrations.md",
        "python",
        "Adding a value to a value set",
        "tests/test_migration_recipe.py::test_the_value_set_recipe_passes_lint_types_and_migration_tests",
    ),
    Claim(
        "docs/migrations.md",
        "bash",
        "How reversibility is tested",
        "tests/test_docs.py::test_pytest_commands_collect_what_they_say",
    ),
    Claim("docs/schema.md", "bash", "Value sets", "tests/test_docs.py::test_database_commands"),
    Claim(
        "docs/usage.md", "python", None, "tests/test_docs.py::test_usage_example_runs_as_written"
    ),
    Claim("docs/integration.md", "python", None, "tests/test_integration.py::app_module"),
    Claim(
        "docs/scans.md",
        "python",
        None,
        "tests/test_docs.py::test_scans_worker_loop_runs_as_written",
    ),
    Claim(
        "docs/security.md", "python", None, "tests/test_docs.py::test_security_doc_runs_as_written"
    ),
    Claim("docs/security.md", "sql", None, "tests/test_docs.py::test_security_doc_runs_as_written"),
    Claim(
        "docs/security.md",
        "sh",
        "Verify on a live database",
        "tests/test_docs.py::test_pytest_commands_collect_what_they_say",
    ),
    Claim("docs/security.md", "bash", "Tokens", "tests/test_docs.py::test_token_keys_command"),
    Claim(
        "docs/performance.md",
        "bash",
        None,
        "tests/test_docs_bench.py::test_bench_commands_as_written",
    ),
    Claim("docs/scaling.md", "sql", None, "tests/test_docs.py::test_scaling_readiness_query"),
)


@dataclass(frozen=True)
class Block:
    doc: str  # relative to the repository root
    line: int  # of the opening fence, 1-based
    lang: str  # first word of the info string, "" when there is none
    section: str  # the nearest heading above, "" before the first
    text: str  # the content, without the fence's indentation

    def __str__(self) -> str:
        return f"{self.doc}:{self.line} ```{self.lang} (section {self.section!r})"

    def commands(self) -> list[str]:
        """The block's lines that are not blank or comments (shell blocks)."""
        return [
            line for line in self.text.splitlines() if line.strip() and not line.startswith("#")
        ]


_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_HEADING = re.compile(r"^#{1,6} +(?P<title>.+?) *#*$")


def parse(doc: str) -> list[Block]:
    return parse_text(doc, (ROOT / doc).read_text())


def parse_text(doc: str, markdown: str) -> list[Block]:
    """The fenced blocks of one document, in order (CommonMark fences, any indent)."""
    blocks: list[Block] = []
    section = ""
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            heading = _HEADING.match(lines[i])
            if heading:
                section = heading["title"]
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = _FENCE.match(lines[j])
            if (
                closing
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            line = lines[j]
            body.append(line[min(indent, len(line) - len(line.lstrip(" "))) :])
            j += 1
        else:
            raise ValueError(f"{doc}:{i + 1}: a fence that is never closed")
        info = opening["info"].split()
        blocks.append(Block(doc, i + 1, info[0] if info else "", section, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def all_blocks() -> list[Block]:
    return [block for doc in DOCS for block in parse(doc)]


def claims_of(block: Block) -> list[Claim]:
    return [
        claim
        for claim in CLAIMS
        if claim.doc == block.doc
        and claim.lang == block.lang
        and claim.section in (None, block.section)
    ]


def blocks_for(runner: str) -> list[Block]:
    """The blocks a runner has claimed, in document order."""
    if not any(claim.runner == runner for claim in CLAIMS):
        raise KeyError(f"{runner} claims no block in tests/docblocks.py CLAIMS")
    return [
        block for block in all_blocks() if any(claim.runner == runner for claim in claims_of(block))
    ]
