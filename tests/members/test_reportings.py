from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.members.conftest import audit_rows, audit_text, create_member, fetch, make_id_number


@pytest.fixture
async def own(client, world):
    """The demo `member` user's own member record: in service, in a1_branch, living in a1."""
    return await create_member(client, world, seq=1, user_id=str(world.users["member"].id))


async def submit(client, world, who, expect=201, **body):
    r = await client.post("/api/v1/reportings", headers=world.h(who), json=body)
    assert r.status_code == expect, r.text
    return r.json()


async def act(client, world, who, reporting_id, action, reason=None, expect=200, **headers):
    json = {"reason": reason} if reason is not None else None
    r = await client.post(
        f"/api/v1/reportings/{reporting_id}/{action}", headers=world.h(who, **headers), json=json
    )
    assert r.status_code == expect, r.text
    return r.json()


async def test_member_reports_and_community_accepts(client, world, own):
    rep = await submit(
        client, world, "member", kind="member", member_id=own["id"], note="愿意参加社区志愿服务"
    )
    assert rep["state"] == "submitted" and rep["active"] is True
    assert rep["community_id"] == str(world.orgs["a1"].id)
    assert rep["submitted_by"] == str(world.users["member"].id)

    # The member reads their own report; the other community does not see it.
    r = await client.get(f"/api/v1/reportings/{rep['id']}", headers=world.h("member"))
    assert r.status_code == 200 and r.headers["etag"] == '"1"'
    r = await client.get(f"/api/v1/reportings/{rep['id']}", headers=world.h("secretary2"))
    assert r.status_code == 404

    done = await act(client, world, "secretary", rep["id"], "accept", **{"If-Match": '"1"'})
    assert done["state"] == "accepted" and done["decided_by"] == str(world.users["secretary"].id)
    assert done["decided_at"] is not None and done["version"] == 2

    rows = await audit_rows("reporting")
    assert [r.action for r in rows] == ["reporting.submit", "reporting.accept"]
    assert rows[1].actor_id == world.users["secretary"].id
    assert rows[1].before["state"] == "submitted" and rows[1].after["state"] == "accepted"


async def test_return_needs_a_reason_then_member_may_resubmit(client, world, own):
    rep = await submit(client, world, "member", kind="member", member_id=own["id"])
    r = await client.post(f"/api/v1/reportings/{rep['id']}/return", headers=world.h("secretary"), json={})
    assert r.status_code == 422
    r = await client.post(
        f"/api/v1/reportings/{rep['id']}/return", headers=world.h("secretary"), json={"reason": "   "}
    )
    assert r.status_code == 422
    returned = await act(client, world, "secretary", rep["id"], "return", "居住地址与登记不符")
    assert returned["state"] == "returned" and returned["reason"] == "居住地址与登记不符"
    assert returned["active"] is False
    (row,) = [r for r in await audit_rows("reporting") if r.action == "reporting.return"]
    assert row.reason == "居住地址与登记不符"
    # Returned is not active: a new submission is allowed.
    again = await submit(client, world, "member", kind="member", member_id=own["id"])
    assert again["id"] != rep["id"]


async def test_deregister_accepted_only(client, world, own):
    rep = await submit(client, world, "secretary", kind="member", member_id=own["id"])
    await act(client, world, "secretary", rep["id"], "deregister", "搬离社区", expect=409)
    await act(client, world, "secretary", rep["id"], "accept")
    r = await client.post(f"/api/v1/reportings/{rep['id']}/deregister", headers=world.h("secretary"), json={})
    assert r.status_code == 422
    gone = await act(client, world, "staff", rep["id"], "deregister", "搬离社区")
    assert gone["deregistered_at"] is not None and gone["deregistration_reason"] == "搬离社区"
    assert gone["deregistered_by"] == str(world.users["staff"].id)
    assert gone["state"] == "accepted" and gone["active"] is False
    # After deregistration the member may report again (e.g. moved back).
    await submit(client, world, "member", kind="member", member_id=own["id"])


@pytest.mark.parametrize(
    ("path", "action"),
    [
        (["return"], "accept"),  # accept a returned one
        (["return"], "return"),
        (["return"], "deregister"),
        (["accept"], "accept"),
        (["accept"], "return"),  # return an accepted one
        (["accept", "deregister"], "deregister"),
        (["accept", "deregister"], "accept"),
        (["accept", "deregister"], "return"),
        ([], "deregister"),  # deregister a submitted one
    ],
)
async def test_illegal_transitions_are_409(client, world, own, path, action):
    rep = await submit(client, world, "member", kind="member", member_id=own["id"])
    for step in path:
        await act(client, world, "secretary", rep["id"], step, "理由")
    before = await fetch(
        "SELECT state, version, deregistered_at FROM reportings WHERE id = :id", id=uuid.UUID(rep["id"])
    )
    r = await client.post(
        f"/api/v1/reportings/{rep['id']}/{action}", headers=world.h("secretary"), json={"reason": "理由"}
    )
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "illegal_transition"
    r = await client.post(
        f"/api/v1/reportings/{rep['id']}/{action}",
        headers=world.h("secretary", **{"Accept-Language": "en"}),
        json={"reason": "理由"},
    )
    assert r.json()["detail"].startswith(f"Cannot {action} while ")
    after = await fetch(
        "SELECT state, version, deregistered_at FROM reportings WHERE id = :id", id=uuid.UUID(rep["id"])
    )
    assert before == after
    assert len(await audit_rows("reporting")) == 1 + len(path)


async def test_one_active_reporting_per_member(client, world, own):
    await submit(client, world, "member", kind="member", member_id=own["id"])
    r = await client.post(
        "/api/v1/reportings", headers=world.h("secretary"), json={"kind": "member", "member_id": own["id"]}
    )
    assert r.status_code == 409 and r.json()["code"] == "reporting_active"
    assert len(await fetch("SELECT id FROM reportings")) == 1


async def test_concurrent_submissions_one_wins(client, world, own):
    body = {"kind": "member", "member_id": own["id"]}
    results = await asyncio.gather(
        client.post("/api/v1/reportings", headers=world.h("secretary"), json=body),
        client.post("/api/v1/reportings", headers=world.h("member"), json=body),
    )
    assert sorted(r.status_code for r in results) == [201, 409], [r.text for r in results]
    loser = next(r for r in results if r.status_code == 409)
    assert loser.json()["code"] == "reporting_active"
    assert len(await fetch("SELECT id FROM reportings")) == 1
    assert len(await audit_rows("reporting")) == 1


@pytest.mark.parametrize(
    ("first", "second"), [("accept", "return"), ("accept", "accept"), ("return", "accept")]
)
async def test_concurrent_decisions_one_wins(client, world, own, first, second):
    rep = await submit(client, world, "member", kind="member", member_id=own["id"])
    url = f"/api/v1/reportings/{rep['id']}"
    results = await asyncio.gather(
        client.post(f"{url}/{first}", headers=world.h("secretary"), json={"reason": "甲"}),
        client.post(f"{url}/{second}", headers=world.h("staff"), json={"reason": "乙"}),
    )
    codes = sorted(r.status_code for r in results)
    assert codes[0] == 200 and codes[1] in (409, 412), [r.text for r in results]
    (row,) = await fetch("SELECT state, version FROM reportings WHERE id = :id", id=uuid.UUID(rep["id"]))
    winner = next(r for r in results if r.status_code == 200).json()
    assert row.state == winner["state"] and row.version == 2
    assert len(await audit_rows("reporting")) == 2


async def test_review_is_for_the_target_community(client, world, own):
    rep = await submit(client, world, "member", kind="member", member_id=own["id"])
    # Out of the community's scope: as if it did not exist.
    await act(client, world, "secretary2", rep["id"], "accept", expect=404)
    # No right to review at all: 403 (the member, the liaison, a grid worker).
    for who in ("member", "liaison", "gridworker", "resident"):
        await act(client, world, who, rep["id"], "accept", expect=403)
    # Street staff above the community may review.
    await act(client, world, "street", rep["id"], "accept")


async def test_member_cannot_report_for_someone_else(client, world, own):
    other = await create_member(client, world, seq=2)
    r = await client.post(
        "/api/v1/reportings", headers=world.h("member"), json={"kind": "member", "member_id": other["id"]}
    )
    assert r.status_code == 404
    r = await client.post(
        "/api/v1/reportings", headers=world.h("gridworker"), json={"kind": "member", "member_id": own["id"]}
    )
    assert r.status_code == 403
    r = await client.post(
        "/api/v1/reportings", headers=world.h("secretary2"), json={"kind": "member", "member_id": own["id"]}
    )
    assert r.status_code == 404
    assert await fetch("SELECT id FROM reportings") == []


async def test_only_active_in_service_members_report(client, world):
    retired = await create_member(client, world, seq=3, category="retired")
    r = await client.post(
        "/api/v1/reportings",
        headers=world.h("secretary"),
        json={"kind": "member", "member_id": retired["id"]},
    )
    assert r.status_code == 409 and r.json()["code"] == "member_not_reportable"
    gone = await create_member(client, world, seq=4, status="transferred_out")
    r = await client.post(
        "/api/v1/reportings", headers=world.h("secretary"), json={"kind": "member", "member_id": gone["id"]}
    )
    assert r.status_code == 409 and r.json()["code"] == "member_not_reportable"


async def test_reported_community_is_checked(client, world):
    lives_a1 = await create_member(client, world, seq=1)
    h = world.h("secretary")
    r = await client.post(
        "/api/v1/reportings",
        headers=h,
        json={"kind": "member", "member_id": lives_a1["id"], "community_id": str(world.orgs["a2"].id)},
    )
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "community_id"]
    nowhere = await create_member(client, world, seq=2, residence_community_id=None)
    r = await client.post(
        "/api/v1/reportings", headers=h, json={"kind": "member", "member_id": nowhere["id"]}
    )
    assert r.status_code == 422
    r = await client.post(
        "/api/v1/reportings",
        headers=h,
        json={"kind": "member", "member_id": nowhere["id"], "community_id": str(world.orgs["street_a"].id)},
    )
    assert r.status_code == 422 and r.json()["code"] == "not_a_community"
    r = await client.post(
        "/api/v1/reportings",
        headers=h,
        json={"kind": "member", "member_id": nowhere["id"], "community_id": str(world.orgs["a2"].id)},
    )
    assert r.status_code == 201
    # Subject fields must fit the kind; unknown kinds are refused.
    for body in (
        {"kind": "member"},
        {"kind": "member", "member_id": lives_a1["id"], "resident_unit_id": str(world.units["a1"].id)},
        {"kind": "unit"},
        {"kind": "unit", "resident_unit_id": str(world.units["a1"].id), "member_id": lives_a1["id"]},
        {"kind": "team", "member_id": lives_a1["id"]},
    ):
        r = await client.post("/api/v1/reportings", headers=h, json=body)
        assert r.status_code == 422, body
    assert len(await fetch("SELECT id FROM reportings")) == 1


async def test_unit_reports_through_its_liaison(client, world):
    unit = world.units["a1"]
    rep = await submit(client, world, "liaison", kind="unit", resident_unit_id=str(unit.id))
    assert rep["community_id"] == str(unit.community_id) and rep["kind"] == "unit"
    # The liaison sees it (through the unit), the community reviews it.
    r = await client.get("/api/v1/reportings", headers=world.h("liaison"))
    assert [x["id"] for x in r.json()["items"]] == [rep["id"]]
    await act(client, world, "liaison", rep["id"], "accept", expect=403)
    await act(client, world, "secretary", rep["id"], "accept")
    # One active reporting per unit.
    r = await client.post(
        "/api/v1/reportings",
        headers=world.h("secretary"),
        json={"kind": "unit", "resident_unit_id": str(unit.id)},
    )
    assert r.status_code == 409 and r.json()["code"] == "reporting_active"
    # A liaison cannot report another unit; the unit reports to its own community only.
    r = await client.post(
        "/api/v1/reportings",
        headers=world.h("liaison"),
        json={"kind": "unit", "resident_unit_id": str(world.units["b1"].id)},
    )
    assert r.status_code == 404
    r = await client.post(
        "/api/v1/reportings",
        headers=world.h("secretary2"),
        json={
            "kind": "unit",
            "resident_unit_id": str(world.units["b1"].id),
            "community_id": str(world.orgs["a1"].id),
        },
    )
    assert r.status_code == 422


async def test_reporting_lists_are_scoped(client, world, own):
    mine = await submit(client, world, "member", kind="member", member_id=own["id"])
    other = await create_member(client, world, seq=2)
    theirs = await submit(client, world, "secretary", kind="member", member_id=other["id"])
    b1_unit = await submit(
        client, world, "secretary2", kind="unit", resident_unit_id=str(world.units["b1"].id)
    )

    async def ids(who, **params):
        r = await client.get("/api/v1/reportings", headers=world.h(who), params=params)
        assert r.status_code == 200, r.text
        return {x["id"] for x in r.json()["items"]}

    assert await ids("member") == {mine["id"]}
    assert await ids("secretary") == {mine["id"], theirs["id"]}
    assert await ids("secretary2") == {b1_unit["id"]}
    assert await ids("admin") == {mine["id"], theirs["id"], b1_unit["id"]}
    assert await ids("liaison") == set()
    assert await ids("gridworker") == {mine["id"], theirs["id"]}
    r = await client.get("/api/v1/reportings", headers=world.h("resident"))
    assert r.status_code == 403
    assert await ids("admin", kind="unit") == {b1_unit["id"]}
    assert await ids("admin", member_id=own["id"]) == {mine["id"]}
    await act(client, world, "secretary", theirs["id"], "return", "重复")
    assert await ids("secretary", state="returned") == {theirs["id"]}
    assert await ids("secretary", active="true") == {mine["id"]}
    assert await ids("secretary", active="false") == {theirs["id"]}
    assert await ids("admin", community_id=str(world.orgs["b1"].id)) == {b1_unit["id"]}
    r = await client.get("/api/v1/reportings", headers=world.h("admin"), params={"state": "approved"})
    assert r.status_code == 422
    r = await client.get(f"/api/v1/reportings/{theirs['id']}", headers=world.h("member"))
    assert r.status_code == 404


async def test_stale_if_match_on_decision_is_412(client, world, own):
    rep = await submit(client, world, "member", kind="member", member_id=own["id"])
    await act(client, world, "secretary", rep["id"], "accept", expect=412, **{"If-Match": '"7"'})
    r = await client.get(f"/api/v1/reportings/{rep['id']}", headers=world.h("secretary"))
    assert r.json()["state"] == "submitted"


async def test_reporting_audit_has_no_personal_data(client, world, own):
    rep = await submit(client, world, "member", kind="member", member_id=own["id"])
    await act(client, world, "secretary", rep["id"], "accept")
    await act(client, world, "secretary", rep["id"], "deregister", "迁出")
    rows = await audit_rows("reporting", "member")
    dumped = audit_text(rows)
    assert make_id_number(1) not in dumped and "13812345601" not in dumped
    assert [r.action for r in rows if r.action.startswith("reporting.")] == [
        "reporting.submit",
        "reporting.accept",
        "reporting.deregister",
    ]
    assert rows[-1].reason == "迁出" and rows[-1].after["deregistration_reason"] == "迁出"


async def test_unknown_reporting_is_404(client, world):
    r = await client.get(f"/api/v1/reportings/{uuid.uuid4()}", headers=world.h("admin"))
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    await act(client, world, "admin", uuid.uuid4(), "accept", expect=404)


async def test_racing_submission_trips_the_unique_index(world, own):
    """The pre-check cannot see an uncommitted rival; the partial unique index still refuses it."""
    from gongjian.auth.service import load_principal
    from gongjian.core import db
    from gongjian.core.errors import ProblemError
    from gongjian.members import service
    from gongjian.members.schemas import ReportingCreate

    data = ReportingCreate(kind="member", member_id=uuid.UUID(own["id"]))
    async with db.sessionmaker()() as first, db.sessionmaker()() as second:
        p1 = await load_principal(first, {"sub": str(world.users["secretary"].id), "kind": "user"})
        p2 = await load_principal(second, {"sub": str(world.users["staff"].id), "kind": "user"})
        await service.submit(first, p1, data)  # inserted, not yet committed
        rival = asyncio.create_task(service.submit(second, p2, data))
        # Wait until the rival's INSERT is blocked on the index entry of the first one.
        for _ in range(500):
            waiting = await fetch(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()"
            )
            if waiting:
                break
            await asyncio.sleep(0.01)
        assert waiting, "the rival submission never blocked"
        await first.commit()
        with pytest.raises(ProblemError) as caught:
            await rival
        assert caught.value.code == "reporting_active"
        await second.rollback()
    assert len(await fetch("SELECT id FROM reportings")) == 1


async def test_linking_an_account_later_shows_the_member_their_reportings(client, world):
    m = await create_member(client, world, seq=1)
    rep = await submit(client, world, "secretary", kind="member", member_id=m["id"])
    assert rep["submitted_by"] == str(world.users["secretary"].id)
    r = await client.get(f"/api/v1/reportings/{rep['id']}", headers=world.h("member"))
    assert r.status_code == 404
    r = await client.patch(
        f"/api/v1/members/{m['id']}",
        headers=world.h("secretary"),
        json={"user_id": str(world.users["member"].id)},
    )
    assert r.status_code == 200
    r = await client.get(f"/api/v1/reportings/{rep['id']}", headers=world.h("member"))
    assert r.status_code == 200 and r.json()["version"] == 2
    r = await client.patch(f"/api/v1/members/{m['id']}", headers=world.h("secretary"), json={"user_id": None})
    assert r.status_code == 200
    r = await client.get(f"/api/v1/reportings/{rep['id']}", headers=world.h("member"))
    assert r.status_code == 404
