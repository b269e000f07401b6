"""docs/migrations.md's "add a value to a value set" recipe, followed as written on a copy
of the repository: the revision it produces passes ruff, mypy and the migration tests."""

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.docblocks import blocks_for

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("alembic", "alembic.ini", "skillmeat", "tests", "pyproject.toml", "README.md")
IGNORED = shutil.ignore_patterns("__pycache__", ".mypy_cache", ".ruff_cache", "*.pyc", "data")


def _path() -> str:
    """PATH with this environment's scripts (alembic) first."""
    return f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_value_set_recipe_passes_lint_types_and_migration_tests(
    tmp_path: Path, pg_server_url: URL
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=IGNORED)
        else:
            shutil.copy2(source, repo / name)
    env = os.environ | {
        "PYTHONPATH": str(repo),
        "SKILLMEAT_TEST_DATABASE_URL": pg_server_url.render_as_string(hide_password=False),
    }
    doc = (ROOT / "docs" / "migrations.md").read_text()
    recipe = doc[doc.index("## Adding a value to a value set") :]
    recipe = recipe[: recipe.index("\n## ", 5)]

    # 1. The member in the StrEnum.
    enums = repo / "skillmeat" / "core" / "models" / "enums.py"
    text = enums.read_text()
    assert '`ARCHIVED = "archived"` in `CatalogStatus`' in recipe
    enums.write_text(
        text.replace(
            '    UNCHANGED = "unchanged"\n',
            '    UNCHANGED = "unchanged"\n    ARCHIVED = "archived"\n',
            1,
        )
    )

    # 2. `alembic revision -m ...` as "Adding a revision" shows it (the recipe's step
    # names the same command), in the copy, and the body from the doc.
    blocks = blocks_for(
        "tests/test_migration_recipe.py::"
        "test_the_value_set_recipe_passes_lint_types_and_migration_tests"
    )
    (command,) = [line for b in blocks if b.lang == "bash" for line in b.commands()]
    assert f"Run `{command}`" in recipe
    made = _run(["bash", "-c", command], repo, env | {"PATH": _path()})
    assert made.returncode == 0, made.stderr
    (path,) = [p for p in (repo / "alembic" / "versions").glob("*catalog_status_archived.py")]
    (body,) = [b.text for b in blocks if b.lang == "python"]
    script = path.read_text()
    stub = re.search(r"def upgrade\(\) -> None:\n.*", script, flags=re.S)
    assert stub, script
    path.write_text(script[: stub.start()] + body.strip() + "\n")

    # 3. Register the file.
    manifest = repo / "tests" / "test_migrations.py"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    manifest.write_text(
        manifest.read_text().replace(
            "RELEASED_REVISIONS = {\n",
            f'RELEASED_REVISIONS = {{\n    "{path.name}": "{digest}",\n',
            1,
        )
    )

    for check in (
        ["ruff", "check", str(path)],
        ["ruff", "format", "--check", str(path)],
        [sys.executable, "-m", "mypy", str(path)],
    ):
        result = _run(check, repo, env)
        assert result.returncode == 0, f"{check}: {result.stdout}{result.stderr}"
    migrations = _run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_migrations.py",
            "tests/conftest.py",
            "-k",
            "not non_superuser and not bad_rows",
        ],
        repo,
        env,
    )
    assert migrations.returncode == 0, migrations.stdout[-4000:] + migrations.stderr[-2000:]
    assert "test_downgrade_leaves_no_trace" not in migrations.stdout  # no failure listed
