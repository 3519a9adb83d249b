from __future__ import annotations

import pytest

from tests.factories import build_world


@pytest.fixture
async def world(session):
    return await build_world(session)


async def test_create_and_get_organization(client, world):
    r = await client.post("/api/v1/organizations", headers=world.h("secretary"),
                          json={"name": "东湖社区第二党支部", "kind": "branch", "parent_id": str(world.orgs["a1"].id)})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["depth"] == world.orgs["a1"].depth + 1
    r2 = await client.get(f"/api/v1/organizations/{body['id']}", headers=world.h("secretary"))
    assert r2.status_code == 200
    assert r2.headers["etag"] == '"1"'


async def test_out_of_scope_is_404(client, world):
    r = await client.get(f"/api/v1/organizations/{world.orgs['b1'].id}", headers=world.h("secretary"))
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "not_found"
