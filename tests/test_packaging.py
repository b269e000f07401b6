"""The wheel migrates without a checkout: build it, install it in a fresh venv under
/tmp, run `skillmeat-db upgrade` and `current` there against a throwaway database.

No network: the wheel is built without build isolation (hatchling is a dev
dependency) and the fresh venv borrows this environment's installed dependencies
through a .pth line (which does not run this environment's .pth files, so the
editable skillmeat stays invisible). skillmeat itself comes only from the wheel.
"""

import os
import shutil
import site
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from skillmeat.core.database.migrations import head_revision
from skillmeat.core.database.provision import drop_database, throwaway_database

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.packaging
PIP = (sys.executable, "-m", "pip")


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            *PIP,
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(work / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = (work / "dist").glob("skillmeat-*.whl")
    env_dir = work / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [*PIP, "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "borrowed_dependencies.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n"
    )
    yield env_dir
    shutil.rmtree(work, ignore_errors=True)


def in_venv(env_dir: Path, *args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "SKILLMEAT_DATABASE_URL": url}
    return subprocess.run(
        list(args), capture_output=True, text=True, env=env, cwd=env_dir, timeout=300
    )


def test_the_wheel_carries_its_migrations_and_runs_them(
    wheel_venv: Path, pg_server_url: URL
) -> None:
    python = str(wheel_venv / "bin" / "python")
    where = in_venv(wheel_venv, python, "-c", "import skillmeat; print(skillmeat.__file__)", url="")
    assert where.stdout.startswith(str(wheel_venv)), where
    with throwaway_database(pg_server_url, prefix="skillmeat_wheel") as server:
        target = server.set(database=f"{server.database}_new")
        # postgres:// as a hosting provider hands it out.
        shown = "postgres://" + target.render_as_string(hide_password=False).split("://", 1)[1]
        try:
            upgrade = in_venv(wheel_venv, "skillmeat-db", "upgrade", url=shown)
            assert upgrade.returncode == 0, upgrade.stderr
            assert f"-> {head_revision()} (head)" in upgrade.stdout
            current = in_venv(wheel_venv, "skillmeat-db", "current", "--url", shown, url="")
            assert current.returncode == 0, current.stderr
            assert f"revision {head_revision()} (at head)" in current.stdout
            library = in_venv(
                wheel_venv,
                python,
                "-c",
                "from skillmeat.core.database import check_at_head; print(check_at_head())",
                url=shown,
            )
            assert library.stdout == "True\n", library.stderr
            # ... and serves a member scope (the identity key from the environment).
            scope = in_venv(
                wheel_venv,
                python,
                "-c",
                "import uuid\n"
                "from sqlalchemy import text\n"
                "from skillmeat.core.database import make_engine, make_session_factory, "
                "tenant_scope\n"
                "engine = make_engine(pool_size=1)\n"
                "with make_session_factory(engine)() as s, "
                "tenant_scope(s, user_id=uuid.uuid4()):\n"
                "    print(s.execute(text('SELECT current_user, count(*) FROM projects')).one())",
                url=target.render_as_string(hide_password=False),
            )
            assert scope.stdout == "('skillmeat_app', 0)\n", scope.stderr
        finally:
            drop_database(target)
    assert not os.path.exists(wheel_venv / "alembic.ini")
