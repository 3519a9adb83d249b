"""A need like an open one nearby: the API says so, and offers to link it (FixMyStreet-style)."""

from __future__ import annotations

import pytest

from gongjian.lists.duplicates import DUPLICATE_THRESHOLD, distance_m, similarity
from tests.lists.conftest import A1_LAT, A1_LNG, PHOTO, count, create_need, need_body

LAMP = {"title": "楼道灯坏了", "description": "3单元楼道灯坏了一个多星期，晚上老人上下楼看不见"}
LAMP_AGAIN = {"title": "3单元楼道灯不亮", "description": "楼道里黑漆漆的，老人晚上下楼怕摔"}
OTHER = {"title": "孩子放学后没人管", "description": "双职工家庭多，希望办四点半课堂"}


@pytest.mark.parametrize(
    ("a", "b", "alike"),
    [
        (LAMP, LAMP_AGAIN, True),
        (
            {"title": "高龄独居老人吃饭难", "description": "希望就近吃午饭或者送餐上门"},
            {"title": "独居老人就餐困难", "description": "想要送餐上门服务"},
            True,
        ),
        (LAMP, OTHER, False),
        ({"title": "下水道堵塞", "description": "一楼污水倒灌"}, OTHER, False),
        ({"title": "慢病老人义诊", "description": ""}, {"title": "暑假孩子没人看", "description": ""}, False),
    ],
)
def test_similarity(a, b, alike):
    score = similarity(
        a["title"], f"{a['title']} {a['description']}", b["title"], f"{b['title']} {b['description']}"
    )
    assert (score >= DUPLICATE_THRESHOLD) == alike, score
    assert similarity(a["title"], a["title"], a["title"], a["title"]) == 1.0


def test_distance():
    assert distance_m(30.2, 120.1, 30.2, 120.1) == 0
    # One thousandth of a degree of latitude is about 111 m.
    assert distance_m(30.2, 120.1, 30.201, 120.1) == pytest.approx(111.2, abs=0.5)


async def test_a_repeat_in_the_same_cell_is_answered_with_the_candidates(client, k):
    first = await create_need(client, k, "gridworker", photos=[PHOTO], **LAMP)
    r = await client.post(
        "/api/v1/needs",
        headers=k.h("staff", **{"Accept-Language": "en"}),
        json=need_body(k, **LAMP_AGAIN),
    )
    assert r.status_code == 409, r.text
    problem = r.json()
    assert problem["code"] == "possible_duplicate" and "allow_duplicate" in problem["detail"]
    (candidate,) = problem["candidates"]
    assert candidate["id"] == first["id"] and candidate["title"] == LAMP["title"]
    assert candidate["state"] == "collected" and candidate["created_at"] == first["created_at"]
    assert candidate["score"] >= DUPLICATE_THRESHOLD
    assert await count("needs") == 1

    # Linked: stored, pointing at the open one.
    linked = await create_need(client, k, "staff", duplicate_of_id=first["id"], **LAMP_AGAIN)
    assert linked["duplicate_of_id"] == first["id"] and linked["state"] == "collected"
    # Linking to a repeat links to what it repeats.
    again = await create_need(client, k, "staff", duplicate_of_id=linked["id"], **LAMP)
    assert again["duplicate_of_id"] == first["id"]
    # Or on purpose, unlinked.
    forced = await create_need(client, k, "staff", allow_duplicate=True, **LAMP_AGAIN)
    assert forced["duplicate_of_id"] is None
    assert await count("needs") == 4


async def test_what_is_not_a_duplicate(client, k):
    first = await create_need(client, k, **LAMP)
    # Something else in the same cell.
    await create_need(client, k, **OTHER)
    # The same words in another cell.
    await create_need(client, k, grid_id=k.cells["a1_2"], **LAMP_AGAIN)
    # Once the first is closed, a new report is a new need.
    r = await client.post(f"/api/v1/needs/{first['id']}/withdraw", headers=k.h("staff"))
    assert r.status_code == 200
    await create_need(client, k, **LAMP_AGAIN)
    # Another community's need, however alike, is not linked to.
    b1 = await create_need(client, k, "secretary2", org_id=k.org("b1"), grid_id=k.cells["b1_1"], **LAMP)
    r = await client.post(
        "/api/v1/needs", headers=k.h("staff"), json=need_body(k, duplicate_of_id=b1["id"], **LAMP_AGAIN)
    )
    assert r.status_code == 422 and r.json()["code"] == "invalid_duplicate_of"


async def test_without_a_cell_nearby_means_300_metres(client, k):
    here = {"lat": A1_LAT + 0.004, "lng": A1_LNG + 0.004}
    first = await create_need(client, k, grid_id=None, location=here, **LAMP)
    near = {"lat": here["lat"] + 0.002, "lng": here["lng"]}  # about 220 m north
    far = {"lat": here["lat"] + 0.01, "lng": here["lng"]}  # about 1.1 km north
    r = await client.post(
        "/api/v1/needs", headers=k.h("staff"), json=need_body(k, grid_id=None, location=near, **LAMP_AGAIN)
    )
    assert r.status_code == 409
    (candidate,) = r.json()["candidates"]
    assert candidate["id"] == first["id"] and 200 < candidate["distance_m"] < 240
    await create_need(client, k, grid_id=None, location=far, **LAMP_AGAIN)


async def test_the_pre_check(client, k):
    first = await create_need(client, k, "gridworker", photos=[PHOTO], **LAMP)
    await create_need(client, k, **OTHER)
    params = {
        "grid_id": k.cells["a1_1"],
        "title": LAMP_AGAIN["title"],
        "description": LAMP_AGAIN["description"],
    }
    r = await client.get("/api/v1/needs/similar", headers=k.h("gridworker"), params=params)
    assert r.status_code == 200, r.text
    (item,) = r.json()["items"]
    assert item["id"] == first["id"] and item["state"] == "collected" and item["score"] >= DUPLICATE_THRESHOLD
    assert item["grid_id"] == k.cells["a1_1"]
    # By position, or across the community.
    loc = first["location"]
    r = await client.get(
        "/api/v1/needs/similar",
        headers=k.h("staff"),
        params={"title": "楼道灯不亮", "lat": loc["lat"] + 0.001, "lng": loc["lng"]},
    )
    assert [i["id"] for i in r.json()["items"]] == [first["id"]]
    r = await client.get(
        "/api/v1/needs/similar", headers=k.h("staff"), params={"title": "楼道灯", "org_id": k.org("a1")}
    )
    assert [i["id"] for i in r.json()["items"]] == [first["id"]]
    r = await client.get(
        "/api/v1/needs/similar", headers=k.h("staff"), params={"title": "修自行车", "org_id": k.org("a1")}
    )
    assert r.json()["items"] == []
    # Nothing outside the caller's scope shows.
    r = await client.get("/api/v1/needs/similar", headers=k.h("secretary2"), params=params)
    assert r.status_code == 200 and r.json()["items"] == []
    r = await client.get("/api/v1/needs/similar", headers=k.h("liaison"), params=params)
    assert r.status_code == 200 and r.json()["items"] == []
    r = await client.get("/api/v1/needs/similar", headers=k.h("member"), params=params)
    assert r.status_code == 403
    # What it needs to know.
    for bad in (
        {"title": "楼道灯"},
        {"title": "楼道灯", "lat": 30.2},
        {"title": "", "org_id": k.org("a1")},
        {"org_id": k.org("a1")},
        {"title": "楼道灯", "lat": 95, "lng": 120},
    ):
        r = await client.get("/api/v1/needs/similar", headers=k.h("staff"), params=bad)
        assert r.status_code == 422, (bad, r.text)
