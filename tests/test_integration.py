"""docs/integration.md's FastAPI app, run as written with FastAPI's TestClient."""

import importlib.util
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from skillmeat.core.database import make_session_factory, tenant_scope
from skillmeat.core.repositories.marketplace import sync_catalog
from skillmeat.core.schemas.marketplace import DetectedArtifact
from tests.docblocks import blocks_for
from tests.rls_world import World


@pytest.fixture
def app_module(
    database_url: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModuleType]:
    """The doc's block saved as a module and imported (it reads SKILLMEAT_DATABASE_URL,
    which the harness points at the test database). A short pool timeout turns an
    undersized pool into errors instead of slow requests."""
    monkeypatch.setenv("SKILLMEAT_POOL_TIMEOUT_S", "0.5")
    (block,) = blocks_for("tests/test_integration.py::app_module")
    path = tmp_path / "marketplace_app.py"
    path.write_text(block.text)
    spec = importlib.util.spec_from_file_location("marketplace_app", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["marketplace_app"] = module
    spec.loader.exec_module(module)
    yield module
    module.engine.dispose()
    sys.modules.pop("marketplace_app", None)


@pytest.fixture
def client(app_module: ModuleType) -> Iterator[TestClient]:
    with TestClient(app_module.app) as c:
        yield c


def as_user(user: uuid.UUID) -> dict[str, str]:
    return {"X-User-Id": str(user)}


def test_sources_crud_and_errors_map_to_statuses(
    client: TestClient, committed_world: World
) -> None:
    a, b = committed_world.a, committed_world.b
    url = f"/projects/{a.project}/sources"
    body = {"repo_url": "github.com/Acme/Integration-Tools.git"}
    created = client.post(url, json=body, headers=as_user(a.members["editor"]))
    assert created.status_code == 201, created.text
    source = created.json()
    assert source["repo_url"] == "https://github.com/Acme/Integration-Tools"
    sid = source["id"]

    assert client.post(url, json=body, headers=as_user(a.members["editor"])).status_code == 409
    assert client.post(url, json=body, headers=as_user(a.members["viewer"])).status_code == 403
    bad = client.post(url, json={"repo_url": "nope"}, headers=as_user(a.members["editor"]))
    assert bad.status_code == 422 and "repo_url" in bad.text
    assert client.post(url, json=body, headers={"X-User-Id": "x"}).status_code == 401

    assert client.get(f"/sources/{sid}", headers=as_user(a.members["viewer"])).status_code == 200
    assert client.get(f"/sources/{sid}", headers=as_user(b.members["owner"])).status_code == 404
    patched = client.patch(
        f"/sources/{sid}", json={"branch_or_ref": "main"}, headers=as_user(a.members["owner"])
    )
    assert patched.status_code == 200 and patched.json()["branch_or_ref"] == "main"
    assert (
        client.patch(
            f"/sources/{sid}", json={"branch_or_ref": "dev"}, headers=as_user(a.members["viewer"])
        ).status_code
        == 403
    )
    listed = client.get(url, headers=as_user(a.members["viewer"])).json()
    assert sid in {s["id"] for s in listed["items"]}
    assert client.delete(f"/sources/{sid}", headers=as_user(b.members["owner"])).status_code == 404
    assert client.delete(f"/sources/{sid}", headers=as_user(a.members["editor"])).status_code == 204
    assert client.get(f"/sources/{sid}", headers=as_user(a.members["viewer"])).status_code == 404


def test_artifacts_listing_pages_filters_and_import(
    client: TestClient, engine: Engine, committed_world: World
) -> None:
    a = committed_world.a
    artifacts = [
        DetectedArtifact(
            artifact_type="skill" if i % 2 else "agent",
            detected_path=f"items/i{i:02d}",
            upstream_url=f"https://github.com/acme/catalog/tree/main/items/i{i:02d}",
            detected_version_sha=f"sha{i}",
            confidence_score=50 + i,
        )
        for i in range(25)
    ]
    with (
        make_session_factory(engine)() as session,
        tenant_scope(session, user_id=a.members["editor"]),
    ):
        sync_catalog(session, a.source, artifacts)
    viewer = as_user(a.members["viewer"])
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"type": "skill", "status": "new", "limit": 5}
        if cursor:
            params["cursor"] = cursor
        page = client.get(f"/sources/{a.source}/artifacts", params=params, headers=viewer).json()
        seen += [e["detected_path"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(f"items/i{i:02d}" for i in range(25) if i % 2)
    bad_sort = client.get(f"/sources/{a.source}/artifacts", params={"sort": "x"}, headers=viewer)
    assert bad_sort.status_code == 422

    first = client.get(f"/sources/{a.source}/artifacts", params={"limit": 2}, headers=viewer)
    ids = [e["id"] for e in first.json()["items"]]
    editor = as_user(a.members["editor"])
    url = f"/sources/{a.source}/import"
    assert client.post(url, json={"entry_ids": ids}, headers=viewer).status_code == 403
    wrong = client.post(
        f"/sources/{committed_world.b.source}/import", json={"entry_ids": ids}, headers=editor
    )
    assert wrong.status_code == 404
    imported = client.post(url, json={"entry_ids": ids}, headers=editor)
    assert imported.status_code == 200 and sorted(imported.json()["imported"]) == sorted(ids)


def test_rescan_request_is_queued_once(client: TestClient, committed_world: World) -> None:
    a, b = committed_world.a, committed_world.b
    url = f"/sources/{a.source}/rescan"
    first = client.post(url, headers=as_user(a.members["editor"]))
    assert first.status_code == 202 and first.json()["state"] == "queued", first.text
    again = client.post(url, headers=as_user(a.members["owner"]))
    assert again.json()["id"] == first.json()["id"]
    assert client.post(url, headers=as_user(a.members["viewer"])).status_code == 403
    assert client.post(url, headers=as_user(b.members["owner"])).status_code == 404


def test_parallel_requests_keep_tenants_apart(client: TestClient, committed_world: World) -> None:
    a = committed_world.a
    path = f"/sources/{a.source}"

    def get(i: int) -> int:
        user = a.members["viewer"] if i % 2 else committed_world.b.members["viewer"]
        return int(client.get(path, headers=as_user(user)).status_code)

    with ThreadPoolExecutor(max_workers=40) as pool:
        codes = list(pool.map(get, range(200)))
    # A's members see the source, B's get 404, under 40 threads sharing one pool
    assert codes.count(200) == 100 and codes.count(404) == 100


def test_app_uses_the_scope_inside_the_endpoint(app_module: ModuleType, engine: Engine) -> None:
    """No connection stays checked out once a response is sent."""
    client = TestClient(app_module.app)
    client.get(f"/sources/{uuid.uuid4()}", headers=as_user(uuid.uuid4()))
    assert app_module.engine.pool.checkedout() == 0
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
