"""Agreement templates, drafts, the frozen canonical content, decline, termination, amendments,
expiry, pairing; every illegal neighbour of each transition answers 409."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from datetime import date
from typing import Any

import pytest

from gongjian.agreements import service
from gongjian.agreements.models import AgreementState
from gongjian.core import storage
from gongjian.core.access import Role
from tests.agreements.helpers import (
    CLAUSES,
    active_agreement,
    create_draft,
    create_template,
    fetch,
    insert_agreement,
    send,
    sign,
)
from tests.factories import World, build_world, make_unit, make_user, token_for


@pytest.fixture(autouse=True)
def _storage(tmp_path):
    storage.set_storage(storage.LocalStorage(tmp_path / "storage"))
    yield
    storage.set_storage(None)


async def _liaison(session: Any, w: World, key: str, unit: str) -> None:
    user = await make_user(session, key, Role.unit_liaison, unit=w.units[unit])
    w.users[key] = user
    w.tokens[key] = token_for(user, [Role.unit_liaison.value])


@pytest.fixture
async def world(session: Any) -> World:
    """The factories' county, plus a unit in a2 (same street as a1) and liaisons for it and b1."""
    w = await build_world(session)
    w.units["a2"] = await make_unit(session, w.orgs["a2"], "桃源物业")
    await _liaison(session, w, "liaison_a2", "a2")
    await _liaison(session, w, "liaison_b1", "b1")
    await session.commit()
    return w


async def count(table: str) -> int:
    return int((await fetch(f"SELECT count(*) FROM {table}"))[0][0])


# --- templates ----------------------------------------------------------------------------


async def test_template_crud_and_reach(client, world):
    w = world
    t = await create_template(client, w)
    assert t["org_id"] == str(w.orgs["street_a"].id) and t["is_active"] and len(t["clauses"]) == 3
    # A community drafts from its street's templates: it reads them, but does not edit them.
    r = await client.get("/api/v1/agreement-templates", headers=w.h("secretary"))
    assert [x["id"] for x in r.json()["items"]] == [t["id"]]
    r = await client.get(f"/api/v1/agreement-templates/{t['id']}", headers=w.h("secretary"))
    assert r.status_code == 200
    etag = r.headers["ETag"]
    r = await client.patch(
        f"/api/v1/agreement-templates/{t['id']}", headers=w.h("secretary"), json={"name": "x"}
    )
    assert r.status_code == 403
    # The other street sees nothing of it.
    r = await client.get("/api/v1/agreement-templates", headers=w.h("secretary2"))
    assert r.json()["items"] == []
    r = await client.get(f"/api/v1/agreement-templates/{t['id']}", headers=w.h("secretary2"))
    assert r.status_code == 404
    # Its keeper edits it with If-Match; a stale ETag is a 412.
    r = await client.patch(
        f"/api/v1/agreement-templates/{t['id']}",
        headers=w.h("street", **{"If-Match": etag}),
        json={"name": "2026年共建协议范本", "is_active": False},
    )
    assert r.status_code == 200 and r.json()["name"] == "2026年共建协议范本"
    r = await client.patch(
        f"/api/v1/agreement-templates/{t['id']}",
        headers=w.h("street", **{"If-Match": etag}),
        json={"name": "y"},
    )
    assert r.status_code == 412
    r = await client.get("/api/v1/agreement-templates", headers=w.h("street"), params={"is_active": True})
    assert r.json()["items"] == []
    r = await client.delete(f"/api/v1/agreement-templates/{t['id']}", headers=w.h("street"))
    assert r.status_code == 204
    assert await count("agreement_templates") == 0


async def test_template_bad_input(client, world):
    w = world
    r = await create_template(
        client, w, expect=422, clauses=[{"key": "a", "title": "甲", "body": "{{community}}与{{乙方}}"}]
    )
    assert r["code"] == "invalid_placeholder" and "{{乙方}}" in r["detail"]
    r = await create_template(client, w, expect=422, clauses=[CLAUSES[0], CLAUSES[0]])
    assert r["code"] == "validation_error"
    r = await create_template(client, w, expect=422, clauses=[])
    await create_template(client, w, "secretary2", org="street_a", expect=404)
    await create_template(client, w, "liaison", org="a1", expect=403)
    await create_template(client, w, "gridworker", org="a1", expect=403)
    assert await count("agreement_templates") == 0


# --- drafts -------------------------------------------------------------------------------


async def test_draft_from_template_fills_placeholders(client, world):
    w = world
    t = await create_template(client, w)
    a = await create_draft(client, w, template_id=t["id"])
    assert re.fullmatch(r"GJ-\d{4}-\d{4}", a["number"]) and a["version_no"] == 1
    assert a["state"] == "draft" and a["content_hash"] is None and a["template_id"] == t["id"]
    assert a["title"] == "东湖社区党委与东湖供电所共建协议"
    bodies = [c["body"] for c in a["clauses"]]
    assert bodies[0] == "东湖社区党委与东湖供电所结对共建，联合开展组织生活。"
    assert bodies[2] == "自2026年1月1日起至2027年12月31日止。"
    assert [(c["side"], c["kind"]) for c in a["commitments"]] == [
        ("unit", "activity"),
        ("unit", "members_report"),
    ]
    # The draft keeps its copy: editing the template later changes nothing in it.
    await client.patch(
        f"/api/v1/agreement-templates/{t['id']}", headers=w.h("street"), json={"clauses": [CLAUSES[1]]}
    )
    r = await client.get(f"/api/v1/agreements/{a['id']}", headers=w.h("secretary"))
    assert len(r.json()["clauses"]) == 3
    # An inactive template is not drafted from.
    await client.patch(
        f"/api/v1/agreement-templates/{t['id']}", headers=w.h("street"), json={"is_active": False}
    )
    r = await create_draft(client, w, template_id=t["id"], expect=409)
    assert r["code"] == "template_inactive"


async def test_numbers_are_unique_under_concurrency(client, world):
    w = world
    drafts = await asyncio.gather(*(create_draft(client, w) for _ in range(6)))
    numbers = [d["number"] for d in drafts]
    assert len(set(numbers)) == 6
    assert sorted(int(n.rsplit("-", 1)[1]) for n in numbers) == list(range(1, 7))


async def test_parties_must_share_a_street(client, world):
    w = world
    # A unit of another community of the same street is fine.
    a = await create_draft(client, w, unit="a2")
    assert a["unit_id"] == str(w.units["a2"].id)
    # A unit of the other street, or none at all: the same refusal, nothing written.
    before = await count("agreements")
    r = await create_draft(client, w, unit="b1", expect=422)
    assert r["code"] == "unit_not_in_street"
    r = await create_draft(client, w, "admin", community="b1", unit="a1", expect=422)
    assert r["code"] == "unit_not_in_street"
    r = await create_draft(client, w, unit_id=str(uuid.uuid4()), expect=422)
    assert r["code"] == "unit_not_in_street"
    # The first party is a community; in the drafter's scope.
    r = await create_draft(client, w, "street", community="street_a", expect=422)
    assert r["code"] == "not_a_community"
    await create_draft(client, w, "secretary", community="b1", unit="b1", expect=404)
    await create_draft(client, w, "liaison", expect=403)
    assert await count("agreements") == before
    assert await count("agreement_commitments") == 2  # the first draft's only


async def resource(client: Any, w: World, unit: str) -> str:
    body = {
        "unit_id": str(w.units[unit].id),
        "category": "service",
        "title": "志愿服务",
        "quantity": 5,
        "quantity_unit": "次",
    }
    r = await client.post("/api/v1/resources", headers=w.h("admin"), json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def test_draft_bad_input(client, world):
    w = world
    r = await create_draft(client, w, expect=422, term_from="2026-12-31", term_to="2026-01-01")
    assert r["code"] == "invalid_term"
    r = await create_draft(client, w, expect=422, clauses=None)
    assert r["errors"][0]["loc"] == ["body", "clauses"]
    bad_commitments: list[dict[str, Any]] = [
        {"side": "unit", "kind": "resource", "quantity": 2},
        {"side": "community", "kind": "members_report", "members_count": 3},
        {"side": "unit", "kind": "activity"},
        {"side": "unit", "kind": "other", "description": "x", "project_id": str(w.units["a1"].id)},
        {"side": "unit", "kind": "project", "project_id": str(w.units["a1"].id)},
    ]
    for commitment in bad_commitments:
        r = await create_draft(client, w, expect=422, commitments=[commitment])
        assert r["code"] == "validation_error", commitment
    # A resource must be the promising side's own.
    own, other = await resource(client, w, "a1"), await resource(client, w, "b1")

    def uses(resource_id: str) -> list[dict[str, Any]]:
        return [{"side": "unit", "kind": "resource", "resource_id": resource_id, "quantity": 1}]

    r = await create_draft(client, w, expect=422, commitments=uses(other))
    assert r["errors"][0]["loc"] == ["body", "commitments", 0, "resource_id"]
    r = await create_draft(client, w, expect=422, commitments=[{**uses(own)[0], "side": "community"}])
    assert r["errors"][0]["loc"] == ["body", "commitments", 0, "resource_id"]
    assert await count("agreements") == 0
    a = await create_draft(client, w, commitments=uses(own))
    assert a["commitments"][0]["resource_id"] == own and a["commitments"][0]["quantity"] == 1


async def test_edit_draft_with_if_match(client, world):
    w = world
    a = await create_draft(client, w)
    r = await client.get(f"/api/v1/agreements/{a['id']}", headers=w.h("staff"))
    etag = r.headers["ETag"]
    body = {
        "title": "2026年度共建协议",
        "clauses": [{"key": "x", "title": "活动共办", "body": "{{unit}}每月参加{{community}}统一活动日。"}],
        "commitments": [{"side": "community", "kind": "other", "description": "提供党员活动室"}],
    }
    r = await client.patch(
        f"/api/v1/agreements/{a['id']}", headers=w.h("staff", **{"If-Match": etag}), json=body
    )
    assert r.status_code == 200, r.text
    b = r.json()
    assert (
        b["title"] == "2026年度共建协议"
        and b["clauses"][0]["body"] == "东湖供电所每月参加东湖社区党委统一活动日。"
    )
    assert [c["side"] for c in b["commitments"]] == ["community"] and r.headers["ETag"] != etag
    # The commitments alone change the version too.
    r = await client.patch(
        f"/api/v1/agreements/{a['id']}", headers=w.h("staff", **{"If-Match": etag}), json={"commitments": []}
    )
    assert r.status_code == 412
    r = await client.patch(
        f"/api/v1/agreements/{a['id']}", headers=w.h("staff"), json={"term_to": "2025-06-30"}
    )
    assert r.status_code == 422 and r.json()["code"] == "invalid_term"
    r = await client.patch(f"/api/v1/agreements/{a['id']}", headers=w.h("liaison"), json={"title": "乙方改"})
    assert r.status_code == 403
    r = await client.patch(
        f"/api/v1/agreements/{a['id']}", headers=w.h("secretary2"), json={"title": "外人改"}
    )
    assert r.status_code == 404
    r = await client.get(f"/api/v1/agreements/{a['id']}", headers=w.h("staff"))
    assert r.json()["title"] == "2026年度共建协议" and r.json()["term_to"] == "2027-12-31"


async def test_a_changed_term_refills_the_clauses(client, world):
    w = world
    a = await create_draft(client, w)
    assert a["clause_sources"] == CLAUSES
    r = await client.patch(
        f"/api/v1/agreements/{a['id']}", headers=w.h("staff"), json={"term_to": "2027-06-30"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["clauses"][2]["body"] == "自2026年1月1日起至2027年6月30日止。"
    assert r.json()["clause_sources"] == CLAUSES


# --- sending: the canonical content -------------------------------------------------------


async def test_send_freezes_a_deterministic_canonical_content(client, world):
    w = world
    a = await create_draft(client, w)
    s = await send(client, w, a["id"])
    assert s["state"] == "pending_signatures" and s["sent_at"] is not None
    text = s["canonical_content"]
    assert s["content_hash"] == hashlib.sha256(text.encode("utf-8")).hexdigest()
    doc = json.loads(text)
    # Sorted keys, no whitespace, Chinese as UTF-8 text.
    assert text == json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert "东湖供电所" in text and "\\u" not in text
    assert doc["number"] == a["number"] and doc["version_no"] == 1 and doc["amends"] is None
    assert doc["parties"]["community"] == {"id": str(w.orgs["a1"].id), "name": "东湖社区党委"}
    assert doc["parties"]["unit"]["id"] == str(w.units["a1"].id)
    assert doc["term"] == {"from": "2026-01-01", "to": "2027-12-31"}
    assert [c["key"] for c in doc["clauses"]] == ["co_organization", "co_resources", "term"]
    assert doc["commitments"][1] == {
        "side": "unit",
        "kind": "members_report",
        "members_count": 12,
        "description": "",
        "quantity": None,
        "recurrence": None,
        "resource_id": None,
        "project_id": None,
    }
    # Rebuilt from the same rows, the content is the same text.
    (row,) = await fetch("SELECT canonical_content, content_hash FROM agreements")
    assert row == (text, s["content_hash"])


async def test_sent_and_active_agreements_are_frozen(client, world):
    w = world
    a = await create_draft(client, w)
    a = await send(client, w, a["id"])
    for body in ({"title": "改"}, {"commitments": []}, {"term_to": "2027-12-31"}):
        r = await client.patch(f"/api/v1/agreements/{a['id']}", headers=w.h("secretary"), json=body)
        assert r.status_code == 409 and r.json()["code"] == "agreement_frozen"
    r = await send(client, w, a["id"], expect=409)
    assert r["code"] == "illegal_transition"
    await sign(client, w, a["id"], "secretary", a["content_hash"])
    await sign(client, w, a["id"], "liaison", a["content_hash"])
    r = await client.patch(f"/api/v1/agreements/{a['id']}", headers=w.h("secretary"), json={"title": "改"})
    assert r.status_code == 409 and r.json()["code"] == "agreement_frozen"
    (row,) = await fetch("SELECT title, content_hash FROM agreements")
    assert row == ("东湖社区党委与东湖供电所共建协议", a["content_hash"])
    # Only staff send.
    b = await create_draft(client, w)
    await send(client, w, b["id"], "liaison", expect=403)
    await send(client, w, b["id"], "secretary2", expect=404)


# --- decline, terminate -------------------------------------------------------------------


async def test_decline_returns_to_draft_and_clears_the_round(client, world):
    w = world
    a = await send(client, w, (await create_draft(client, w))["id"])
    await sign(client, w, a["id"], "secretary", a["content_hash"])
    url = f"/api/v1/agreements/{a['id']}/decline"
    r = await client.post(url, headers=w.h("staff"), json={"reason": "x"})
    assert r.status_code == 403
    r = await client.post(url, headers=w.h("liaison_b1"), json={"reason": "x"})
    assert r.status_code == 404
    r = await client.post(url, headers=w.h("liaison"), json={"reason": ""})
    assert r.status_code == 422
    r = await client.post(url, headers=w.h("liaison"), json={"reason": "活动频次需调整为每季度"})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["state"] == "draft" and d["signatures"] == [] and d["content_hash"] is None
    assert d["decline_reason"] == "活动频次需调整为每季度" and d["declined_at"] is not None
    (entry,) = await fetch("SELECT before, reason FROM audit_log WHERE action = 'agreement.decline'")
    assert entry.before["signatures"][0]["side"] == "community" and entry.reason == "活动频次需调整为每季度"
    r = await client.post(url, headers=w.h("liaison"), json={"reason": "again"})
    assert r.status_code == 409 and r.json()["code"] == "illegal_transition"
    # Edited and sent again: a new hash; a signature over the old one is refused.
    r = await client.patch(
        f"/api/v1/agreements/{a['id']}",
        headers=w.h("secretary"),
        json={
            "commitments": [
                {"side": "unit", "kind": "activity", "recurrence": "quarterly", "description": "季度活动"}
            ]
        },
    )
    assert r.status_code == 200
    b = await send(client, w, a["id"])
    assert b["content_hash"] != a["content_hash"]
    r = await sign(client, w, a["id"], "liaison", a["content_hash"], expect=409)
    assert r.json()["code"] == "content_hash_mismatch"
    await sign(client, w, a["id"], "liaison", b["content_hash"])


async def test_terminate_an_active_agreement(client, world, session):
    w = world
    a = await create_draft(client, w)
    url = f"/api/v1/agreements/{a['id']}/terminate"
    r = await client.post(url, headers=w.h("secretary"), json={"reason": "提前终止"})
    assert r.status_code == 409 and r.json()["code"] == "illegal_transition"
    a = await active_agreement(client, w)
    url = f"/api/v1/agreements/{a['id']}/terminate"
    assert await service.paired_unit_ids(session, w.orgs["a1"].id) == {w.units["a1"].id}
    r = await client.post(url, headers=w.h("staff"), json={"reason": "x"})
    assert r.status_code == 403
    r = await client.post(url, headers=w.h("liaison"), json={"reason": "单位搬迁出本社区"})
    assert r.status_code == 200, r.text
    t = r.json()
    assert t["state"] == "terminated" and t["termination_reason"] == "单位搬迁出本社区"
    (row,) = await fetch("SELECT terminated_by FROM agreements WHERE id = :id", id=a["id"])
    assert row[0] == w.users["liaison"].id
    r = await client.post(url, headers=w.h("secretary"), json={"reason": "again"})
    assert r.status_code == 409
    r = await client.post(f"/api/v1/agreements/{a['id']}/amendments", headers=w.h("secretary"))
    assert r.status_code == 409
    assert await service.paired_unit_ids(session, w.orgs["a1"].id) == set()


# --- amendments ---------------------------------------------------------------------------


async def test_amendment_supersedes_the_old_version(client, world):
    w = world
    v1 = await active_agreement(client, w)
    r = await client.post(f"/api/v1/agreements/{v1['id']}/amendments", headers=w.h("liaison"))
    assert r.status_code == 403
    r = await client.post(f"/api/v1/agreements/{v1['id']}/amendments", headers=w.h("secretary"))
    assert r.status_code == 201, r.text
    v2 = r.json()
    assert (v2["number"], v2["version_no"], v2["previous_id"], v2["state"]) == (
        v1["number"],
        2,
        v1["id"],
        "draft",
    )
    assert v2["clauses"] == v1["clauses"] and len(v2["commitments"]) == 2
    # One open version at a time.
    r = await client.post(f"/api/v1/agreements/{v1['id']}/amendments", headers=w.h("secretary"))
    assert r.status_code == 409 and r.json()["code"] == "agreement_version_open"
    r = await client.post(f"/api/v1/agreements/{v2['id']}/amendments", headers=w.h("secretary"))
    assert r.status_code == 409 and r.json()["code"] == "illegal_transition"
    r = await client.patch(
        f"/api/v1/agreements/{v2['id']}", headers=w.h("secretary"), json={"term_to": "2027-12-31"}
    )
    assert r.status_code == 200
    v2 = await send(client, w, v2["id"])
    assert json.loads(v2["canonical_content"])["amends"] == v1["content_hash"]
    # The old version stays in force until the new one is signed by both sides.
    await sign(client, w, v2["id"], "secretary", v2["content_hash"])
    r = await client.get(f"/api/v1/agreements/{v1['id']}", headers=w.h("liaison"))
    assert r.json()["state"] == "active"
    r = await sign(client, w, v2["id"], "liaison", v2["content_hash"])
    assert r.json()["state"] == "active"
    old = (await client.get(f"/api/v1/agreements/{v1['id']}", headers=w.h("liaison"))).json()
    assert old["state"] == "superseded" and old["superseded_by_id"] == v2["id"] and old["superseded_at"]
    assert old["content_hash"] == v1["content_hash"] and len(old["signatures"]) == 2
    # A signer still looking at the old version is refused.
    r = await sign(client, w, v1["id"], "secretary", v1["content_hash"], expect=409)
    assert r.json()["code"] == "illegal_transition"
    r = await client.get(f"/api/v1/agreements/{v2['id']}/versions", headers=w.h("liaison"))
    assert [(x["version_no"], x["state"]) for x in r.json()] == [(1, "superseded"), (2, "active")]
    r = await client.get("/api/v1/agreements", headers=w.h("staff"), params={"number": v1["number"]})
    assert {x["id"] for x in r.json()["items"]} == {v1["id"], v2["id"]}
    actions = [
        a for (a,) in await fetch("SELECT action FROM audit_log WHERE action LIKE 'agreement.%' ORDER BY at")
    ]
    assert actions.count("agreement.activate") == 2 and actions.count("agreement.supersede") == 1


async def test_two_amendments_at_once_make_one_version(client, world):
    w = world
    v1 = await active_agreement(client, w)
    url = f"/api/v1/agreements/{v1['id']}/amendments"
    results = await asyncio.gather(*(client.post(url, headers=w.h(who)) for who in ("secretary", "staff")))
    assert sorted(r.status_code for r in results) == [201, 409]
    assert await count("agreements") == 2


# --- lists, filters, scope ----------------------------------------------------------------


async def test_lists_filters_and_scope(client, world):
    w = world
    a1 = await create_draft(client, w)
    a2 = await create_draft(client, w, "street", community="a2", unit="a2")
    b1 = await create_draft(client, w, "secretary2", community="b1", unit="b1")
    await send(client, w, a1["id"])

    async def ids(who: str, **params: Any) -> set[str]:
        r = await client.get("/api/v1/agreements", headers=w.h(who), params=params)
        assert r.status_code == 200, r.text
        return {x["id"] for x in r.json()["items"]}

    assert await ids("admin") == {a1["id"], a2["id"], b1["id"]}
    assert await ids("street") == {a1["id"], a2["id"]}
    assert await ids("secretary") == {a1["id"]}
    assert await ids("liaison") == {a1["id"]}
    assert await ids("liaison_a2") == {a2["id"]}
    assert await ids("liaison_b1") == {b1["id"]}
    assert await ids("admin", state="pending_signatures") == {a1["id"]}
    assert await ids("admin", community_id=str(w.orgs["a2"].id)) == {a2["id"]}
    assert await ids("admin", unit_id=str(w.units["b1"].id)) == {b1["id"]}
    assert await ids("street", unit_id=str(w.units["b1"].id)) == set()
    assert await ids("admin", number=b1["number"]) == {b1["id"]}
    r = await client.get("/api/v1/agreements", headers=w.h("gridworker"))
    assert r.status_code == 403
    for who, aid in (("liaison", a2["id"]), ("secretary", b1["id"]), ("liaison_b1", a1["id"])):
        r = await client.get(f"/api/v1/agreements/{aid}", headers=w.h(who))
        assert r.status_code == 404 and r.json()["code"] == "not_found"
        r = await client.get(f"/api/v1/agreements/{aid}/versions", headers=w.h(who))
        assert r.status_code == 404
    r = await client.get("/api/v1/agreements", headers=w.h("admin"), params={"state": "signed"})
    assert r.status_code == 422


# --- expiry, pairing ----------------------------------------------------------------------


async def test_expire_due(session, world):
    w = world
    due = await insert_agreement(session, w.orgs["a1"].id, w.units["a1"].id, term_to=date(2026, 3, 31))
    running = await insert_agreement(session, w.orgs["a1"].id, w.units["a2"].id, term_to=date(2026, 4, 1))
    expired = await service.expire_due(session, date(2026, 4, 1))
    await session.commit()
    assert [a.id for a in expired] == [due.id]
    rows = dict(await fetch("SELECT id, state FROM agreements"))
    assert rows == {due.id: "expired", running.id: "active"}
    assert await service.expire_due(session, date(2026, 4, 1)) == []
    assert await service.paired_unit_ids(session, w.orgs["a1"].id) == {w.units["a2"].id}
    assert AgreementState.expired.value == "expired"
