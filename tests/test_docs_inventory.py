"""Every command and code block in README.md and docs/ is run by a test.

tests/docblocks.py lists which test runs which blocks; this file fails on a block no
test claims, on a claim no block matches any more, and on a claim naming a test
that does not exist. Blocks tagged ```text (recorded output) or ```mermaid (a
diagram) are not programs (docblocks.NOT_RUN says why for each).
"""

import ast

from tests.docblocks import CLAIMS, NOT_RUN, ROOT, all_blocks, claims_of, parse_text


def test_every_command_and_code_block_is_run_by_a_test() -> None:
    unclaimed = [
        str(block) for block in all_blocks() if block.lang not in NOT_RUN and not claims_of(block)
    ]
    assert not unclaimed, (
        "blocks no test runs (run them from a test and claim them in tests/docblocks.py, "
        "or tag recorded output ```text):\n" + "\n".join(unclaimed)
    )


def test_blocks_that_are_not_run_are_not_claimed_either() -> None:
    assert not [str(b) for b in all_blocks() if b.lang in NOT_RUN and claims_of(b)]


def test_every_claim_matches_a_block() -> None:
    blocks = all_blocks()
    stale = [claim for claim in CLAIMS if not any(claim in claims_of(b) for b in blocks)]
    assert not stale, f"claims that match no block any more: {stale}"


def test_every_runner_exists() -> None:
    missing = []
    for runner in sorted({claim.runner for claim in CLAIMS}):
        path, name = runner.split("::")
        tree = ast.parse((ROOT / path).read_text())
        defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        if name not in defined:
            missing.append(runner)
    assert not missing, f"claimed runners that are not defined: {missing}"


def test_the_parser_reads_fences_as_commonmark_does() -> None:
    """Indented fences (in list items), longer fences around shorter ones, info strings
    with more than the language, and the heading a block sits under."""
    blocks = parse_text(
        "probe.md",
        "# Title\n\n## One\n\n```bash\necho a\n```\n\n1. item\n\n   ```python\n"
        "   if x:\n       y = 1\n   ```\n\n### Two\n\n````text title\n```\nnested\n```\n````\n\n"
        "```\n  bare\n```\n",
    )
    assert [(b.lang, b.section, b.text) for b in blocks] == [
        ("bash", "One", "echo a\n"),
        ("python", "One", "if x:\n    y = 1\n"),
        ("text", "Two", "```\nnested\n```\n"),
        ("", "Two", "  bare\n"),
    ]
    assert [b.line for b in blocks] == [5, 11, 18, 24]
