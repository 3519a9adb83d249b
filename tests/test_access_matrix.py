"""The access matrix: every demo role (and an API client) × every endpoint group × an object in the
caller's scope ("home") and one outside it ("away").

The county (tests/factories.py): 宁川县委 → 城中街道 (street_a) → 东湖社区 (a1) → its branch, and
城北街道 (street_b) → 北门社区 (b1) → its branch. Everyone lives in a1 except secretary2 (org_admin
of b1), so for them "home" is the a1 side and "away" the b1 side, and the other way round for
secretary2. Each group gets one object on each side (for reportings, the liaison's home object is
its unit's reporting and the member's is their own).

The rules the table spells out, cell by cell:
- an object outside every grant of the caller does not exist for them: 404;
- a permission the caller holds nowhere, or not where the object lies: 403;
- a list is 403 without the read permission (organizations and reportings answer 200 with only
  what the caller may see); a 200 list never shows an away object, and shows the home object
  exactly when the caller may read it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any, NamedTuple

import httpx
import pytest
from sqlalchemy import select

from gongjian.auth.models import ApiClient
from gongjian.core.access import CLIENT_SCOPES, Perm
from gongjian.core.audit import AuditEntry
from gongjian.core.security import create_access_token, hash_password
from gongjian.core.validators import id_number_check_char
from tests.evaluations.helpers import make_agreement
from tests.factories import World, build_world

ROLES = [
    "admin",
    "street",
    "secretary",
    "secretary2",
    "gridworker",
    "liaison",
    "member",
    "resident",
    "client",
]

# The API client: registered on 东湖社区 (a1) with every read scope.
CLIENT_SCOPES_GRANTED = sorted(s for s in CLIENT_SCOPES if s.endswith(":read"))


class Row(NamedTuple):
    """Expected statuses: list, get home, get away, write home, write away (None: no such call)."""

    list: int
    get_home: int | None
    get_away: int | None
    write_home: int | None
    write_away: int | None


R = Row
ALL_DENIED = R(403, 403, 403, 403, 403)

# fmt: off
MATRIX: dict[str, dict[str, Row]] = {
    # write: PATCH the organization's name
    "organizations": {
        "admin":      R(200, 200, 200, 200, 200),
        "street":     R(200, 200, 404, 200, 404),
        "secretary":  R(200, 200, 404, 200, 404),
        "secretary2": R(200, 200, 404, 200, 404),
        "gridworker": R(200, 200, 404, 403, 403),
        "liaison":    R(403, 403, 403, 403, 403),
        "member":     R(403, 403, 403, 403, 403),
        "resident":   R(403, 403, 403, 403, 403),
        "client":     R(200, 200, 404, 403, 403),
    },
    # write: PATCH the unit's address (a liaison edits its own unit)
    "resident-units": {
        "admin":      R(200, 200, 200, 200, 200),
        "street":     R(200, 200, 404, 200, 404),
        "secretary":  R(200, 200, 404, 200, 404),
        "secretary2": R(200, 200, 404, 200, 404),
        "gridworker": R(200, 200, 404, 403, 403),
        "liaison":    R(200, 200, 404, 200, 404),
        "member":     ALL_DENIED,
        "resident":   ALL_DENIED,
        "client":     R(200, 200, 404, 403, 403),
    },
    # write: PATCH the cell's name
    "grid-cells": {
        "admin":      R(200, 200, 200, 200, 200),
        "street":     R(200, 200, 404, 200, 404),
        "secretary":  R(200, 200, 404, 200, 404),
        "secretary2": R(200, 200, 404, 200, 404),
        "gridworker": R(200, 200, 404, 403, 403),
        "liaison":    ALL_DENIED,
        "member":     ALL_DENIED,
        "resident":   ALL_DENIED,
        "client":     R(200, 200, 404, 403, 403),
    },
    # list: the buildings of the home cell; write: PATCH the building (grid workers keep buildings)
    "buildings": {
        "admin":      R(200, 200, 200, 200, 200),
        "street":     R(200, 200, 404, 200, 404),
        "secretary":  R(200, 200, 404, 200, 404),
        "secretary2": R(200, 200, 404, 200, 404),
        "gridworker": R(200, 200, 404, 200, 404),
        "liaison":    ALL_DENIED,
        "member":     ALL_DENIED,
        "resident":   ALL_DENIED,
        "client":     R(200, 200, 404, 403, 403),
    },
    # write: PATCH the member's name; a member reads their own record only
    "members": {
        "admin":      R(200, 200, 200, 200, 200),
        "street":     R(200, 200, 404, 200, 404),
        "secretary":  R(200, 200, 404, 200, 404),
        "secretary2": R(200, 200, 404, 200, 404),
        "gridworker": R(200, 200, 404, 403, 403),
        "liaison":    ALL_DENIED,
        "member":     R(200, 200, 404, 403, 403),
        "resident":   ALL_DENIED,
        "client":     R(200, 200, 404, 403, 403),
    },
    # write: accept the reporting (community staff review); read by whoever may submit or review
    "reportings": {
        "admin":      R(200, 200, 200, 200, 200),
        "street":     R(200, 200, 404, 200, 404),
        "secretary":  R(200, 200, 404, 200, 404),
        "secretary2": R(200, 200, 404, 200, 404),
        "gridworker": R(200, 200, 404, 403, 403),  # reads its community's reportings
        "liaison":    R(200, 200, 404, 403, 403),  # its unit's reporting
        "member":     R(200, 200, 404, 403, 403),  # their own reporting
        "resident":   R(403, 403, 403, 403, 403),
        "client":     R(403, 403, 403, 403, 403),
    },
    # write: PATCH the title; a liaison keeps its own unit's resources (home is the a1 unit's)
    "resources": {
        "admin":      R(200, 200, 200, 200, 200),
        "street":     R(200, 200, 404, 200, 404),
        "secretary":  R(200, 200, 404, 200, 404),
        "secretary2": R(200, 200, 404, 200, 404),
        "gridworker": R(200, 200, 404, 403, 403),
        "liaison":    R(200, 200, 404, 200, 404),
        "member":     ALL_DENIED,
        "resident":   ALL_DENIED,
        "client":     R(200, 200, 404, 403, 403),
    },
    # write: PATCH the title; a liaison's unit grant reaches no need (an empty list)
    "needs": {
        "admin":      R(200, 200, 200, 200, 200),
        "street":     R(200, 200, 404, 200, 404),
        "secretary":  R(200, 200, 404, 200, 404),
        "secretary2": R(200, 200, 404, 200, 404),
        "gridworker": R(200, 200, 404, 403, 403),
        "liaison":    R(200, 404, 404, 404, 404),
        "member":     ALL_DENIED,
        "resident":   ALL_DENIED,
        "client":     R(200, 200, 404, 403, 403),
    },
    # write: PATCH the title; a liaison reads the projects its unit joins (the home one), writes none
    "projects": {
        "admin":      R(200, 200, 200, 200, 200),
        "street":     R(200, 200, 404, 200, 404),
        "secretary":  R(200, 200, 404, 200, 404),
        "secretary2": R(200, 200, 404, 200, 404),
        "gridworker": R(200, 200, 404, 403, 403),
        "liaison":    R(200, 200, 404, 403, 403),
        "member":     ALL_DENIED,
        "resident":   ALL_DENIED,
        "client":     R(200, 200, 404, 403, 403),
    },
    # write: PATCH the location of a scheduled meeting; no API client scope reads meetings
    "meetings": {
        "admin":      R(200, 200, 200, 200, 200),
        "street":     R(200, 200, 404, 200, 404),
        "secretary":  R(200, 200, 404, 200, 404),
        "secretary2": R(200, 200, 404, 200, 404),
        "gridworker": R(200, 200, 404, 403, 403),
        "liaison":    ALL_DENIED,
        "member":     ALL_DENIED,
        "resident":   ALL_DENIED,
        "client":     ALL_DENIED,
    },
    # imports of the lists, seen by who reads the lists of the organization imported under (importing
    # itself, POST /lists/imports, is tested role by role in tests/lists_imports/test_access.py)
    "list-imports": {
        "admin":      R(200, 200, 200, None, None),
        "street":     R(200, 200, 404, None, None),
        "secretary":  R(200, 200, 404, None, None),
        "secretary2": R(200, 200, 404, None, None),
        "gridworker": R(200, 200, 404, None, None),
        "liaison":    R(200, 404, 404, None, None),  # its unit grant reaches no organization
        "member":     R(403, 403, 403, None, None),
        "resident":   R(403, 403, 403, None, None),
        "client":     R(200, 200, 404, None, None),
    },
    # bulk matching runs, seen by who reads the lists of the organization matched (starting one is
    # tested role by role in tests/matching/test_access.py, with a need's matches and the decisions)
    "matching-runs": {
        "admin":      R(200, 200, 200, None, None),
        "street":     R(200, 200, 404, None, None),
        "secretary":  R(200, 200, 404, None, None),
        "secretary2": R(200, 200, 404, None, None),
        "gridworker": R(200, 200, 404, None, None),
        "liaison":    R(200, 404, 404, None, None),  # its unit grant reaches no organization
        "member":     R(403, 403, 403, None, None),
        "resident":   R(403, 403, 403, None, None),
        "client":     R(200, 200, 404, None, None),
    },
    # write: PATCH the name; each side's template is kept by its community (a community also reads
    # those kept above it); a liaison reads agreements, never templates (an empty list)
    "agreement-templates": {
        "admin":      R(200, 200, 200, 200, 200),
        "street":     R(200, 200, 404, 200, 404),
        "secretary":  R(200, 200, 404, 200, 404),
        "secretary2": R(200, 200, 404, 200, 404),
        "gridworker": ALL_DENIED,
        "liaison":    R(200, 404, 404, 403, 403),
        "member":     ALL_DENIED,
        "resident":   ALL_DENIED,
        "client":     ALL_DENIED,
    },
    # write: PATCH the draft's title; each side's agreement is between its community and its unit,
    # which the liaison reads (signing is tested side by side in tests/agreements)
    "agreements": {
        "admin":      R(200, 200, 200, 200, 200),
        "street":     R(200, 200, 404, 200, 404),
        "secretary":  R(200, 200, 404, 200, 404),
        "secretary2": R(200, 200, 404, 200, 404),
        "gridworker": ALL_DENIED,
        "liaison":    R(200, 200, 404, 403, 403),
        "member":     ALL_DENIED,
        "resident":   ALL_DENIED,
        "client":     ALL_DENIED,
    },
    # each side's window is its signed agreement's 2026 evaluation; write: PATCH the closing (staff);
    # a liaison reads its unit's window and rates in it (rating is tested side by side in
    # tests/evaluations)
    "evaluation-windows": {
        "admin":      R(200, 200, 200, 200, 200),
        "street":     R(200, 200, 404, 200, 404),
        "secretary":  R(200, 200, 404, 200, 404),
        "secretary2": R(200, 200, 404, 200, 404),
        "gridworker": ALL_DENIED,
        "liaison":    R(200, 200, 404, 403, 403),
        "member":     ALL_DENIED,
        "resident":   ALL_DENIED,
        "client":     ALL_DENIED,
    },
    # each side's rubric is its street's (a1: street_a, b1: street_b); rubrics are never edited;
    # a community reads the rubric that applies to it through its windows (an empty list here)
    "evaluation-rubrics": {
        "admin":      R(200, 200, 200, None, None),
        "street":     R(200, 200, 404, None, None),
        "secretary":  R(200, 404, 404, None, None),
        "secretary2": R(200, 404, 404, None, None),
        "gridworker": R(403, 403, 403, None, None),
        "liaison":    R(200, 404, 404, None, None),
        "member":     R(403, 403, 403, None, None),
        "resident":   R(403, 403, 403, None, None),
        "client":     R(403, 403, 403, None, None),
    },
    # write: PATCH the user's display name
    "users": {
        "admin":      R(200, 200, 200, 200, 200),
        "street":     R(200, 200, 404, 403, 403),
        "secretary":  R(200, 200, 404, 200, 404),
        "secretary2": R(200, 200, 404, 200, 404),
        "gridworker": ALL_DENIED,
        "liaison":    ALL_DENIED,
        "member":     ALL_DENIED,
        "resident":   ALL_DENIED,
        "client":     ALL_DENIED,
    },
    # write: revoke (DELETE) the client
    "api-clients": {
        "admin":      R(200, 200, 200, 204, 204),
        "street":     ALL_DENIED,
        "secretary":  R(200, 200, 404, 204, 404),
        "secretary2": R(200, 200, 404, 204, 404),
        "gridworker": ALL_DENIED,
        "liaison":    ALL_DENIED,
        "member":     ALL_DENIED,
        "resident":   ALL_DENIED,
        "client":     ALL_DENIED,
    },
    # list only: the entries filed under the home or away community's organizations
    "audit-log": {
        "admin":      R(200, None, None, None, None),
        "street":     R(403, None, None, None, None),
        "secretary":  R(200, None, None, None, None),
        "secretary2": R(200, None, None, None, None),
        "gridworker": R(403, None, None, None, None),
        "liaison":    R(403, None, None, None, None),
        "member":     R(403, None, None, None, None),
        "resident":   R(403, None, None, None, None),
        "client":     R(403, None, None, None, None),
    },
}
# fmt: on


def test_the_matrix_covers_every_role_and_group():
    assert set(MATRIX) == {
        "organizations",
        "resident-units",
        "grid-cells",
        "buildings",
        "members",
        "reportings",
        "resources",
        "needs",
        "projects",
        "meetings",
        "list-imports",
        "matching-runs",
        "agreement-templates",
        "agreements",
        "evaluation-windows",
        "evaluation-rubrics",
        "users",
        "api-clients",
        "audit-log",
    }
    for group, rows in MATRIX.items():
        assert list(rows) == ROLES, group


# --- the county the matrix runs in -------------------------------------------------------


@dataclass
class County:
    world: World
    client_token: str
    objects: dict[str, dict[str, str]]  # group -> side ("a1", "b1", or a special home) -> id

    def headers(self, who: str) -> dict[str, str]:
        if who == "client":
            return {"Authorization": f"Bearer {self.client_token}"}
        return self.world.h(who)


def _square(lng: float, lat: float) -> dict[str, Any]:
    ring = [[lng, lat], [lng + 0.01, lat], [lng + 0.01, lat + 0.01], [lng, lat + 0.01], [lng, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


def _id_number(seq: int) -> str:
    body = f"33020319850312{seq:02d}1"
    return body + id_number_check_char(body)


async def _post(client: httpx.AsyncClient, w: World, path: str, body: dict[str, Any]) -> str:
    r = await client.post(path, headers=w.h("admin"), json=body)
    assert r.status_code == 201, (path, r.text)
    return str(r.json()["id"])


_SECRET_HASH = hash_password("matrix-secret")


async def _api_client(session: Any, w: World, label: str, org: str, scopes: list[str]) -> ApiClient:
    row = ApiClient(
        name=f"{label}数据平台",
        client_id=f"gjc_matrix_{label}",
        secret_hash=_SECRET_HASH,
        scopes=scopes,
        org_id=w.orgs[org].id,
    )
    session.add(row)
    await session.flush()
    return row


@pytest.fixture
async def county(client: httpx.AsyncClient, session: Any) -> County:
    w = await build_world(session)
    acting = await _api_client(session, w, "acting", "a1", CLIENT_SCOPES_GRANTED)
    clients = {
        side: await _api_client(session, w, side, side, [str(Perm.lists_read)]) for side in ("a1", "b1")
    }
    await session.commit()
    token, _ = create_access_token(
        subject=str(acting.id), kind="client", roles=[], scopes=CLIENT_SCOPES_GRANTED
    )
    objects: dict[str, dict[str, str]] = {
        "organizations": {side: str(w.orgs[f"{side}_branch"].id) for side in ("a1", "b1")},
        "resident-units": {side: str(w.units[side].id) for side in ("a1", "b1")},
        "users": {"a1": str(w.users["staff"].id), "b1": str(w.users["secretary2"].id)},
        "api-clients": {side: str(c.id) for side, c in clients.items()},
        "grid-cells": {},
        "buildings": {},
        "members": {},
        "reportings": {},
    }
    for side, (lng, lat) in (("a1", (120.10, 30.20)), ("b1", (120.30, 30.40))):
        community = str(w.orgs[side].id)
        cell = await _post(
            client,
            w,
            "/api/v1/grid-cells",
            {
                "community_id": community,
                "code": f"{side.upper()}-01",
                "name": f"{side}第一网格",
                "boundary": _square(lng, lat),
            },
        )
        objects["grid-cells"][side] = cell
        objects["buildings"][side] = await _post(
            client, w, f"/api/v1/grid-cells/{cell}/buildings", {"name": "1幢", "households": 24}
        )
        member = await _post(
            client,
            w,
            "/api/v1/members",
            {
                "name": f"{side}党员",
                "id_number": _id_number(1 if side == "a1" else 2),
                "category": "in_service",
                "org_id": str(w.orgs[f"{side}_branch"].id),
                "residence_community_id": community,
                # The a1 member is the demo "member" account's own record.
                **({"user_id": str(w.users["member"].id)} if side == "a1" else {}),
            },
        )
        objects["members"][side] = member
        objects["reportings"][side] = await _post(
            client, w, "/api/v1/reportings", {"kind": "member", "member_id": member}
        )
    objects["reportings"]["a1_unit"] = await _post(
        client, w, "/api/v1/reportings", {"kind": "unit", "resident_unit_id": str(w.units["a1"].id)}
    )
    # Each side's resource is its unit's; each side's need its community's.
    objects["resources"] = {
        side: await _post(
            client,
            w,
            "/api/v1/resources",
            {
                "unit_id": str(w.units[side].id),
                "category": "service",
                "title": f"{side}单位志愿服务",
                "quantity": 5,
                "quantity_unit": "次",
            },
        )
        for side in ("a1", "b1")
    }
    objects["needs"] = {
        side: await _post(
            client,
            w,
            "/api/v1/needs",
            {"org_id": str(w.orgs[side].id), "category": "service", "title": f"{side}老人助餐"},
        )
        for side in ("a1", "b1")
    }
    # Each side's project is its community's, its unit a joint unit; each side's meeting its community's.
    objects["projects"] = {
        side: await _post(
            client,
            w,
            "/api/v1/projects",
            {
                "org_id": str(w.orgs[side].id),
                "title": f"{side}为老服务",
                "joint_unit_ids": [str(w.units[side].id)],
            },
        )
        for side in ("a1", "b1")
    }
    objects["meetings"] = {
        side: await _post(
            client,
            w,
            "/api/v1/meetings",
            {
                "org_id": str(w.orgs[side].id),
                "kind": "joint_meeting",
                "title": f"{side}联席会议",
                "scheduled_at": "2026-12-01T09:30:00+08:00",
            },
        )
        for side in ("a1", "b1")
    }
    objects["list-imports"] = {}
    for side in ("a1", "b1"):
        r = await client.post(
            "/api/v1/lists/imports", params={"parent_org_id": str(w.orgs[side].id)}, content=b"{}",
            headers=w.h("admin", **{"Content-Type": "application/json"}),
        )
        assert r.status_code == 202, r.text
        objects["list-imports"][side] = r.json()["id"]
    objects["agreement-templates"] = {
        side: await _post(
            client,
            w,
            "/api/v1/agreement-templates",
            {
                "org_id": str(w.orgs[side].id),
                "name": f"{side}共建协议范本",
                "clauses": [{"key": "co_building", "title": "组织共建", "body": "{{unit}}共建"}],
            },
        )
        for side in ("a1", "b1")
    }
    objects["agreements"] = {
        side: await _post(
            client,
            w,
            "/api/v1/agreements",
            {
                "community_id": str(w.orgs[side].id),
                "unit_id": str(w.units[side].id),
                "template_id": objects["agreement-templates"][side],
                "term_from": "2026-01-01",
                "term_to": "2026-12-31",
            },
        )
        for side in ("a1", "b1")
    }
    # Each side's signed agreement (written as signing leaves it) and its 2026 evaluation window.
    objects["evaluation-windows"] = {
        side: await _post(
            client,
            w,
            f"/api/v1/agreements/{(await make_agreement(session, w, community=side, unit=side)).id}"
            "/evaluation-windows",
            {"year": 2026},
        )
        for side in ("a1", "b1")
    }
    objects["evaluation-rubrics"] = {
        side: await _post(
            client,
            w,
            "/api/v1/evaluation-rubrics",
            {
                "org_id": str(w.orgs[street].id),
                "side": "community",
                "name": f"{side}街道评议细则",
                "items": [{"key": "commitments_kept", "label": "履行承诺", "weight": 100}],
            },
        )
        for side, street in (("a1", "street_a"), ("b1", "street_b"))
    }
    objects["matching-runs"] = {
        side: str(
            (
                await client.post(
                    "/api/v1/matching/runs", json={"org_id": str(w.orgs[side].id)}, headers=w.h("admin")
                )
            ).json()["id"]
        )
        for side in ("a1", "b1")
    }
    entries = (
        await session.execute(
            select(AuditEntry.object_id, AuditEntry.id).where(AuditEntry.action == "organization.create")
        )
    ).all()
    by_object = {str(obj): str(entry) for obj, entry in entries}
    objects["audit-log"] = {side: by_object[objects["organizations"][side]] for side in ("a1", "b1")}
    return County(world=w, client_token=token, objects=objects)


# --- how each group is called -------------------------------------------------------------


class Calls(NamedTuple):
    list_url: Callable[[County, str], str]  # (county, home id) -> the list to read
    item_url: Callable[[str], str] | None  # id -> the object's URL
    write: Callable[[httpx.AsyncClient, str, dict[str, str]], Any] | None


def _patch(prefix: str, body: dict[str, Any]) -> Callable[[httpx.AsyncClient, str, dict[str, str]], Any]:
    return lambda c, oid, h: c.patch(f"{prefix}/{oid}", headers=h, json=body)


CALLS: dict[str, Calls] = {
    "organizations": Calls(
        lambda k, home: "/api/v1/organizations",
        lambda oid: f"/api/v1/organizations/{oid}",
        _patch("/api/v1/organizations", {"name": "改名的支部"}),
    ),
    "resident-units": Calls(
        lambda k, home: "/api/v1/resident-units",
        lambda oid: f"/api/v1/resident-units/{oid}",
        _patch("/api/v1/resident-units", {"address": "新地址1号"}),
    ),
    "grid-cells": Calls(
        lambda k, home: "/api/v1/grid-cells",
        lambda oid: f"/api/v1/grid-cells/{oid}",
        _patch("/api/v1/grid-cells", {"name": "改名的网格"}),
    ),
    "buildings": Calls(
        lambda k, home: f"/api/v1/grid-cells/{k.objects['grid-cells'][home]}/buildings",
        lambda oid: f"/api/v1/buildings/{oid}",
        _patch("/api/v1/buildings", {"households": 30}),
    ),
    "members": Calls(
        lambda k, home: "/api/v1/members",
        lambda oid: f"/api/v1/members/{oid}",
        _patch("/api/v1/members", {"joined_party_on": str(date(2001, 7, 1))}),
    ),
    "reportings": Calls(
        lambda k, home: "/api/v1/reportings",
        lambda oid: f"/api/v1/reportings/{oid}",
        lambda c, oid, h: c.post(f"/api/v1/reportings/{oid}/accept", headers=h),
    ),
    "resources": Calls(
        lambda k, home: "/api/v1/resources",
        lambda oid: f"/api/v1/resources/{oid}",
        _patch("/api/v1/resources", {"title": "改名的资源"}),
    ),
    "needs": Calls(
        lambda k, home: "/api/v1/needs",
        lambda oid: f"/api/v1/needs/{oid}",
        _patch("/api/v1/needs", {"title": "改名的需求"}),
    ),
    "projects": Calls(
        lambda k, home: "/api/v1/projects",
        lambda oid: f"/api/v1/projects/{oid}",
        _patch("/api/v1/projects", {"title": "改名的项目"}),
    ),
    "meetings": Calls(
        lambda k, home: "/api/v1/meetings",
        lambda oid: f"/api/v1/meetings/{oid}",
        _patch("/api/v1/meetings", {"location": "改到二楼会议室"}),
    ),
    "list-imports": Calls(
        lambda k, home: "/api/v1/lists/imports",
        lambda oid: f"/api/v1/lists/imports/{oid}",
        None,
    ),
    "matching-runs": Calls(
        lambda k, home: "/api/v1/matching/runs",
        lambda oid: f"/api/v1/matching/runs/{oid}",
        None,
    ),
    "agreement-templates": Calls(
        lambda k, home: "/api/v1/agreement-templates",
        lambda oid: f"/api/v1/agreement-templates/{oid}",
        _patch("/api/v1/agreement-templates", {"name": "改名的范本"}),
    ),
    "agreements": Calls(
        lambda k, home: "/api/v1/agreements",
        lambda oid: f"/api/v1/agreements/{oid}",
        _patch("/api/v1/agreements", {"title": "改名的协议"}),
    ),
    "evaluation-windows": Calls(
        lambda k, home: "/api/v1/evaluation-windows",
        lambda oid: f"/api/v1/evaluation-windows/{oid}",
        _patch("/api/v1/evaluation-windows", {"closes_at": "2099-12-31T00:00:00+08:00"}),
    ),
    "evaluation-rubrics": Calls(
        lambda k, home: "/api/v1/evaluation-rubrics",
        lambda oid: f"/api/v1/evaluation-rubrics/{oid}",
        None,
    ),
    "users": Calls(
        lambda k, home: "/api/v1/users",
        lambda oid: f"/api/v1/users/{oid}",
        _patch("/api/v1/users", {"display_name": "改名"}),
    ),
    "api-clients": Calls(
        lambda k, home: "/api/v1/api-clients",
        lambda oid: f"/api/v1/api-clients/{oid}",
        lambda c, oid, h: c.delete(f"/api/v1/api-clients/{oid}", headers=h),
    ),
    "audit-log": Calls(lambda k, home: "/api/v1/audit-log", None, None),
}


def _sides(group: str, who: str) -> tuple[str, str]:
    if who == "secretary2":
        return "b1", "a1"
    if group == "reportings" and who == "liaison":
        return "a1_unit", "b1"
    return "a1", "b1"


async def _list_ids(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> tuple[int, list[str]]:
    ids: list[str] = []
    cursor = None
    for _ in range(50):
        params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        r = await client.get(url, headers=headers, params=params)
        if r.status_code != 200:
            return r.status_code, ids
        ids.extend(item["id"] for item in r.json()["items"])
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    return 200, ids


def _check(r: httpx.Response, expected: int, what: str) -> None:
    assert r.status_code == expected, f"{what}: expected {expected}, got {r.status_code}: {r.text[:300]}"
    if expected >= 400:
        assert r.headers["content-type"].startswith("application/problem+json"), what
        assert r.json()["code"] == {403: "forbidden", 404: "not_found"}[expected], (what, r.text)


@pytest.mark.parametrize("who", ROLES)
@pytest.mark.parametrize("group", list(MATRIX))
async def test_access(client: httpx.AsyncClient, county: County, group: str, who: str):
    expected = MATRIX[group][who]
    calls = CALLS[group]
    home_side, away_side = _sides(group, who)
    home, away = county.objects[group][home_side], county.objects[group][away_side]
    h = county.headers(who)

    status, listed = await _list_ids(
        client, calls.list_url(county, home_side if home_side != "a1_unit" else "a1"), h
    )
    assert status == expected.list, f"{group} list as {who}: expected {expected.list}, got {status}"
    if status == 200:
        if who != "admin":
            assert away not in listed, f"{group}: {who} sees an object out of scope in the list"
            # Nothing from the other community at all, whatever its kind.
            other = {oid for side, oid in county.objects[group].items() if not side.startswith(home_side[:2])}
            assert not other & set(listed), f"{group}: {who} lists {other & set(listed)}"
        if expected.get_home is not None:
            assert (home in listed) == (expected.get_home == 200), f"{group} list as {who}: home object"
        elif group == "audit-log":
            assert home in listed, f"audit-log as {who}: its own community's entry is missing"
            assert (away in listed) == (who == "admin"), f"audit-log as {who}: the other community's entry"

    if calls.item_url is not None:
        _check(
            await client.get(calls.item_url(home), headers=h), expected.get_home, f"GET {group} home as {who}"
        )
        _check(
            await client.get(calls.item_url(away), headers=h), expected.get_away, f"GET {group} away as {who}"
        )
    if calls.write is not None and calls.item_url is not None:
        assert expected.write_away is not None and expected.write_home is not None
        admin = county.headers("admin")
        for oid, want, side in ((away, expected.write_away, "away"), (home, expected.write_home, "home")):
            before = (await client.get(calls.item_url(oid), headers=admin)).json()
            _check(await calls.write(client, oid, h), want, f"write {group} {side} as {who}")
            after = (await client.get(calls.item_url(oid), headers=admin)).json()
            # A refused write leaves the object exactly as it was; an allowed one changes it.
            assert (after == before) == (want >= 400), f"write {group} {side} as {who}: {before} -> {after}"
