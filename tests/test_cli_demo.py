"""The demo county and the `gongjian` command.

- Loading the demo builds what the README promises (a county, 2 streets, 5 communities with
  3-5 real-looking grid cells each, ~20 resident units of every type with valid credit codes,
  200 members with valid ID numbers, 双报到 reportings) and every demo login works.
- `gongjian demo` loads once (a second run does nothing), the same county every time, and
  refuses a production environment; `gongjian create-admin` makes a working admin.
- `gongjian serve` with no DATABASE_URL runs its own embedded PostgreSQL, migrates, loads the
  demo and serves; two instances run side by side with their own DATA_DIR and PORT.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from shapely.geometry import shape
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from gongjian.cli import main as cli_main
from gongjian.cli import openapi_document
from gongjian.core.security import decrypt_pii
from gongjian.core.validators import is_valid_credit_code, is_valid_id_number
from gongjian.demo import data, loader
from gongjian.grids.models import Building, GridAssignment, GridCell
from gongjian.lists.models import Need, Resource
from gongjian.members.models import Member, Reporting
from gongjian.organizations.models import CommitteeMember, Organization
from gongjian.resident_units.models import ResidentUnit
from tests.conftest import _admin_exec, _server_url, _with_database

ROOT = Path(__file__).resolve().parents[1]
LOGINS = {
    "admin": "platform_admin",
    "street": "org_staff",
    "secretary": "org_admin",
    "gridworker": "grid_worker",
    "liaison": "unit_liaison",
    "member": "member",
    "resident": "resident",
    "secretary2": "org_admin",
}


async def _count(session: AsyncSession, model: Any, *where: Any) -> int:
    return (await session.execute(select(func.count()).select_from(model).where(*where))).scalar_one()


async def _login(client: httpx.AsyncClient, username: str) -> str:
    r = await client.post("/api/v1/auth/token", data={"username": username, "password": data.PASSWORD})
    assert r.status_code == 200, (username, r.text)
    body = r.json()
    assert body["token_type"].lower() == "bearer" and body["expires_in"] > 0 and body["refresh_token"]
    return str(body["access_token"])


async def test_demo_county_has_what_the_readme_promises(client, session) -> None:
    summary = await loader.load(session)
    await session.commit()
    assert await loader.is_loaded(session)
    assert summary["members"] == 200 and summary["users"] == len(LOGINS)

    orgs = list((await session.execute(select(Organization))).scalars())
    county = [o for o in orgs if o.level == "county"]
    streets = [o for o in orgs if o.level == "street"]
    # The demo's own communities; the sample lists (demo/lists.json) bring two more, with their cells.
    communities = [o for o in orgs if o.level == "community" and o.external_ref is None]
    assert [o.short_name for o in county] == ["宁川县委"] and county[0].kind == "county_committee"
    assert len(streets) == 2
    assert all(o.kind == "working_committee" and o.parent_id == county[0].id for o in streets)
    assert len(communities) == 5 and all(o.kind == "committee" for o in communities)
    assert {o.parent_id for o in communities} == {s.id for s in streets}
    assert await _count(session, CommitteeMember) >= 5  # 社区大党委 part-time members

    # Grid cells: 3-5 per community, valid polygons that do not overlap, with buildings and households.
    cells = list((await session.execute(select(GridCell).where(GridCell.external_ref.is_(None)))).scalars())
    per_community = {c.id: 0 for c in communities}
    for cell in cells:
        per_community[cell.community_id] += 1
        assert "party" in cell.layers
    assert all(3 <= n <= 5 for n in per_community.values()), per_community
    shapes = [shape(c.boundary) for c in cells]
    assert all(s.is_valid and s.area > 0 for s in shapes)
    for i, a in enumerate(shapes):
        assert 29.5 < a.centroid.y < 30.2 and 121.2 < a.centroid.x < 121.9
        for b in shapes[i + 1:]:
            assert a.intersection(b).area < 1e-12
    buildings = list((await session.execute(select(Building))).scalars())
    assert len(buildings) >= 3 * len(cells)
    assert all(b.households > 0 and b.building_leader_name for b in buildings)
    for b in buildings:
        cell = next(c for c in cells if c.id == b.grid_cell_id)
        point = shape({"type": "Point", "coordinates": [b.lng, b.lat]})
        assert shapes[cells.index(cell)].buffer(1e-9).contains(point)

    # Resident units: about 20, every type, valid GB 32100 codes, party orgs of every mode.
    units = list((await session.execute(select(ResidentUnit))).scalars())
    assert 18 <= len(units) <= 25
    assert {u.type for u in units} == {"agency", "soe", "institution", "private", "social_org"}
    assert all(is_valid_credit_code(u.credit_code) for u in units)
    assert {u.credit_code[:2] for u in units if u.type == "agency"} == {"11"}
    assert {u.credit_code[0] for u in units if u.type in ("soe", "private")} == {"9"}
    assert {u.credit_code[0] for u in units if u.type == "social_org"} == {"5"}
    assert {u.party_org_mode for u in units} == {"none", "single", "joint", "attached"}
    assert {u.community_id for u in units} == {c.id for c in communities}

    # Members: 200 with valid, distinct ID numbers (encrypted at rest), every category.
    members = list((await session.execute(select(Member))).scalars())
    assert len(members) == 200
    id_numbers = [decrypt_pii(m.id_number_encrypted) for m in members]
    assert all(n and is_valid_id_number(n) for n in id_numbers) and len(set(id_numbers)) == 200
    assert all(m.phone_encrypted is None or m.phone_encrypted.startswith("v1:") for m in members)
    assert {m.category for m in members} == {"in_service", "retired", "floating", "hardship"}
    assert all(m.residence_community_id in per_community and m.grid_cell_id for m in members)

    # 双报到: units and in-service members, in every state.
    reportings = list((await session.execute(select(Reporting))).scalars())
    assert {r.kind for r in reportings} == {"unit", "member"}
    assert {r.state for r in reportings} == {"submitted", "accepted", "returned"}

    # The sample lists, imported under 城中街道: 东湖 and 桃源 are the demo's, 书院 and a 北门 new.
    assert summary["resources"] == 60 and summary["needs"] == 40
    imported = [o for o in orgs if o.level == "community" and o.external_ref is not None]
    chengzhong = next(o for o in streets if o.code == "NC-CZ")
    assert sorted(o.name for o in imported) == ["书院社区", "北门社区"]
    assert {o.parent_id for o in imported} == {chengzhong.id}
    by_community = dict((await session.execute(
        select(Need.org_id, func.count()).group_by(Need.org_id)
    )).all())
    assert by_community[next(o.id for o in communities if o.code == "NC-CZ-DH")] > 0
    assert await _count(session, Resource, Resource.external_ref.is_(None)) == 0

    # Every demo login works with the documented password and holds its role.
    tokens = {}
    for username, role in LOGINS.items():
        tokens[username] = await _login(client, username)
        me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens[username]}"})
        assert me.status_code == 200 and role in me.json()["roles"], (username, me.text)

    def h(who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[who]}"}

    donghu = next(o for o in communities if o.code == "NC-CZ-DH")
    beimen = next(o for o in communities if o.code == "NC-JB-BM")
    # The secretary sees their community's cells and nothing of the other street's community.
    r = await client.get("/api/v1/grid-cells", params={"limit": 100}, headers=h("secretary"))
    assert r.status_code == 200
    assert {c["community_id"] for c in r.json()["items"]} == {str(donghu.id)}
    assert (await client.get(f"/api/v1/organizations/{beimen.id}", headers=h("secretary"))).status_code == 404
    r = await client.get(f"/api/v1/organizations/{beimen.id}", headers=h("secretary2"))
    assert r.status_code == 200
    # The grid worker serves a cell of that same community.
    worker = (await session.execute(
        select(GridAssignment).join(GridCell, GridCell.id == GridAssignment.grid_cell_id)
        .where(GridCell.community_id == donghu.id, GridAssignment.role == "worker")
    )).scalars().all()
    assert len(worker) == 1
    # The member sees their own record, which has reported to 东湖 and been accepted.
    r = await client.get("/api/v1/members", headers=h("member"))
    assert r.status_code == 200 and len(r.json()["items"]) >= 1
    own = [m for m in r.json()["items"] if m["user_id"] is not None]
    assert len(own) == 1 and own[0]["residence_community_id"] == str(donghu.id)
    r = await client.get("/api/v1/reportings", params={"member_id": own[0]["id"]}, headers=h("member"))
    assert r.status_code == 200 and [x["state"] for x in r.json()["items"]] == ["accepted"]
    assert r.json()["items"][0]["community_id"] == str(donghu.id)
    # The liaison reaches exactly their unit, which sits in the secretary's community.
    r = await client.get("/api/v1/resident-units", headers=h("liaison"))
    assert r.status_code == 200 and [u["community_id"] for u in r.json()["items"]] == [str(donghu.id)]


# --- the command line --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch_url() -> Iterator[str]:
    server = _server_url()
    name = f"gongjian_cli_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin_exec(server, f'CREATE DATABASE "{name}"'))
    yield _with_database(server, name)
    asyncio.run(_admin_exec(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEST_DATABASE_URL", "LOAD_DEMO")}
    env.update(extra)
    return env


def _gongjian(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gongjian.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=timeout, check=False,
    )


@pytest.fixture
async def scratch(scratch_url: str) -> AsyncIterator[AsyncConnection]:
    engine = create_async_engine(scratch_url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            yield conn
    finally:
        await engine.dispose()


async def _fingerprint(conn: AsyncConnection | AsyncSession) -> dict[str, Any]:
    """What makes the demo the demo, independent of database ids and timestamps."""
    async def rows(sql: str) -> list[Any]:
        return [tuple(r) for r in (await conn.execute(text(sql))).all()]

    return {
        "organizations": await rows("SELECT name, kind, level, depth FROM organizations ORDER BY name"),
        "units": await rows("SELECT credit_code, name, type, party_org_mode, lat, lng FROM resident_units "
                            "ORDER BY credit_code"),
        "cells": await rows("SELECT code, name, boundary::text FROM grid_cells ORDER BY code"),
        "buildings": await rows("SELECT name, households, floors FROM buildings ORDER BY name"),
        "members": await rows("SELECT id_number_hash, name, category, birth_date FROM members ORDER BY 1"),
        "reportings": await rows("SELECT kind, state, note FROM reportings ORDER BY 1, 2, 3"),
    }


async def test_cli_demo_loads_once_the_same_county_and_never_into_production(
    scratch_url, scratch, session
) -> None:
    env = _env(DATABASE_URL=scratch_url)
    first = await asyncio.to_thread(_gongjian, "demo", env=env)
    assert first.returncode == 0, first.stderr
    assert "demo data loaded" in first.stdout and "members=200" in first.stdout

    again = await asyncio.to_thread(_gongjian, "demo", env=env)
    assert again.returncode == 0, again.stderr
    assert "already present" in again.stdout
    assert (await scratch.execute(text("SELECT count(*) FROM members"))).scalar_one() == 200

    refused = await asyncio.to_thread(_gongjian, "demo", env={**env, "ENVIRONMENT": "production"})
    assert refused.returncode == 2 and "production" in refused.stderr

    # The same seed gives the same county: compare with a load in this process.
    await loader.load(session)
    await session.commit()
    assert await _fingerprint(scratch) == await _fingerprint(session)


async def test_cli_create_admin(scratch_url, scratch) -> None:
    env = _env(DATABASE_URL=scratch_url, GONGJIAN_ADMIN_PASSWORD="onlylowercase")
    weak = await asyncio.to_thread(_gongjian, "create-admin", "--username", "ops", env=env)
    assert weak.returncode == 2 and "Password" in weak.stderr

    env["GONGJIAN_ADMIN_PASSWORD"] = "Ops#Admin2026"
    args = ("create-admin", "--username", "ops", "--display-name", "运维")
    made = await asyncio.to_thread(_gongjian, *args, env=env)
    assert made.returncode == 0, made.stderr
    role = (await scratch.execute(text(
        "SELECT r.role FROM role_assignments r JOIN users u ON u.id = r.user_id WHERE u.username = 'ops'"
    ))).scalar_one()
    assert role == "platform_admin"

    twice = await asyncio.to_thread(_gongjian, "create-admin", "--username", "ops", env=env)
    assert twice.returncode == 2 and "already exists" in twice.stderr


def test_cli_openapi_writes_the_contract(tmp_path: Path) -> None:
    out = tmp_path / "contract" / "openapi.json"
    assert cli_main(["openapi", "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == openapi_document()
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["info"]["title"].startswith("Gongjian")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(proc: subprocess.Popen[str], base: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, _ = proc.communicate()
            pytest.fail(f"gongjian serve exited with {proc.returncode}:\n{out}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    out, _ = proc.communicate()
    pytest.fail(f"gongjian serve not ready at {base}:\n{out}")


def test_serve_embedded_two_instances_side_by_side(tmp_path: Path) -> None:
    instances = []
    for name in ("a", "b"):
        port = _free_port()
        data_dir = tmp_path / name
        env = _env(DATA_DIR=str(data_dir), PORT=str(port), HOST="127.0.0.1", ENVIRONMENT="development")
        env.pop("XDG_RUNTIME_DIR", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "gongjian.cli", "serve"], env=env, cwd=ROOT, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        instances.append((proc, f"http://127.0.0.1:{port}", data_dir))
    try:
        deadline = time.monotonic() + 240
        for proc, base, _ in instances:
            _wait_ready(proc, base, deadline)
        for _, base, _ in instances:
            assert httpx.get(f"{base}/docs", timeout=10).status_code == 200
            token = httpx.post(f"{base}/api/v1/auth/token", timeout=10,
                               data={"username": "secretary", "password": data.PASSWORD})
            assert token.status_code == 200, token.text
            auth = {"Authorization": f"Bearer {token.json()['access_token']}"}
            cells = httpx.get(f"{base}/api/v1/grid-cells", headers=auth, timeout=10)
            own = [c for c in cells.json()["items"] if c["external_ref"] is None]  # not the sample lists'
            assert cells.status_code == 200 and len(own) == 4
    finally:
        for proc, _, _ in instances:
            proc.terminate()
        outputs = [proc.communicate(timeout=60)[0] for proc, _, _ in instances]
    for (proc, _, data_dir), out in zip(instances, outputs, strict=True):
        assert proc.returncode == 0, out
        assert "demo data loaded" in out
        # Each instance kept its database in its own folder and stopped it on the way out.
        assert (data_dir / "pg" / "PG_VERSION").exists()
        assert not (data_dir / "pg" / "postmaster.pid").exists(), out
