"""The inbox over the API: own notifications only, newest first, read and unread."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select

from gongjian.auth.models import ApiClient
from gongjian.core.security import create_access_token, hash_password
from gongjian.notifications.models import Notification
from tests.notifications.conftest import send

URL = "/api/v1/notifications"


async def test_a_user_reads_their_own_inbox_newest_first(client, session, world):
    liaison, secretary = world.users["liaison"].id, world.users["secretary"].id
    await send(session, [liaison], title="第一条", link="/api/v1/agreements/x", payload={"n": 1})
    await send(session, [liaison, secretary], title="第二条", kind="test.other")

    r = await client.get(URL, headers=world.h("liaison"))
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [n["title"] for n in items] == ["第二条", "第一条"]
    assert r.json()["next_cursor"] is None
    first = items[1]
    assert first["kind"] == "test.hello" and first["body"] == "请及时处理。"
    assert first["link"] == "/api/v1/agreements/x" and first["payload"] == {"n": 1}
    assert first["read"] is False and first["read_at"] is None
    assert items[0]["payload"] == {} and items[0]["link"] is None

    r = await client.get(URL, headers=world.h("secretary"))
    assert [n["title"] for n in r.json()["items"]] == ["第二条"]
    r = await client.get(URL, params={"kind": "test.other"}, headers=world.h("liaison"))
    assert [n["title"] for n in r.json()["items"]] == ["第二条"]


async def test_another_users_notification_does_not_exist_for_the_caller(client, session, world):
    [mine] = await send(session, [world.users["liaison"].id], title="联络员的通知")
    url = f"{URL}/{mine.id}"
    assert (await client.get(url, headers=world.h("liaison"))).status_code == 200
    # Not even a platform admin reads someone else's inbox.
    for who in ("admin", "secretary", "resident"):
        r = await client.get(url, headers=world.h(who))
        assert r.status_code == 404, (who, r.text)
        assert r.json()["code"] == "not_found"
        r = await client.post(f"{url}/read", headers=world.h(who))
        assert r.status_code == 404, who
        r = await client.get(URL, headers=world.h(who))
        assert r.json()["items"] == []
        r = await client.post(f"{URL}/read-all", headers=world.h(who))
        assert r.json() == {"marked": 0}
        r = await client.get(f"{URL}/unread-count", headers=world.h(who))
        assert r.json() == {"unread": 0}
    # Nothing was marked read by those attempts.
    r = await client.get(url, headers=world.h("liaison"))
    assert r.json()["read"] is False
    # An unknown id is the same 404.
    r = await client.get(f"{URL}/{uuid.uuid4()}", headers=world.h("liaison"))
    assert r.status_code == 404


async def test_read_one_then_all(client, session, world):
    me = world.users["staff"].id
    [b] = [(await send(session, [me], title=t))[0] for t in ("甲", "乙", "丙")][1:2]
    h = world.h("staff")
    assert (await client.get(f"{URL}/unread-count", headers=h)).json() == {"unread": 3}

    r = await client.post(f"{URL}/{b.id}/read", headers=h)
    assert r.status_code == 200, r.text
    read_at = r.json()["read_at"]
    assert r.json()["read"] is True and read_at is not None
    # Reading it again keeps the first time.
    r = await client.post(f"{URL}/{b.id}/read", headers=h)
    assert r.status_code == 200 and r.json()["read_at"] == read_at

    assert (await client.get(f"{URL}/unread-count", headers=h)).json() == {"unread": 2}
    r = await client.get(URL, params={"unread": "true"}, headers=h)
    assert [n["title"] for n in r.json()["items"]] == ["丙", "甲"]
    r = await client.get(URL, params={"unread": "false"}, headers=h)
    assert [n["title"] for n in r.json()["items"]] == ["乙"]

    r = await client.post(f"{URL}/read-all", headers=h)
    assert r.status_code == 200 and r.json() == {"marked": 2}
    assert (await client.get(f"{URL}/unread-count", headers=h)).json() == {"unread": 0}
    r = await client.post(f"{URL}/read-all", headers=h, json={})
    assert r.json() == {"marked": 0}
    rows = (await session.execute(select(Notification.read_at).where(Notification.user_id == me))).all()
    assert len(rows) == 3 and all(row.read_at is not None for row in rows)


async def test_read_all_up_to_leaves_one_that_arrived_meanwhile(client, session, world):
    me = world.users["staff"].id
    [shown] = await send(session, [me], title="已显示")
    [late] = await send(session, [me], title="刚到")
    late.created_at = shown.created_at + timedelta(seconds=5)
    await session.commit()

    r = await client.post(
        f"{URL}/read-all", headers=world.h("staff"), json={"up_to": shown.created_at.isoformat()}
    )
    assert r.json() == {"marked": 1}
    r = await client.get(URL, params={"unread": "true"}, headers=world.h("staff"))
    assert [n["title"] for n in r.json()["items"]] == ["刚到"]


async def test_cursor_pages_through_the_inbox_without_gaps_or_repeats(client, session, world):
    me = world.users["member"].id
    for i in range(25):
        await send(session, [me], title=f"通知{i}")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        r = await client.get(URL, params=params, headers=world.h("member"))
        assert r.status_code == 200, r.text
        seen += [n["title"] for n in r.json()["items"]]
        pages += 1
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [f"通知{i}" for i in reversed(range(25))]


async def test_bad_input_is_a_clear_4xx(client, session, world):
    [n] = await send(session, [world.users["staff"].id])
    h = world.h("staff")
    assert (await client.get(f"{URL}/not-a-uuid", headers=h)).status_code == 422
    assert (await client.post(f"{URL}/not-a-uuid/read", headers=h)).status_code == 422
    r = await client.get(URL, params={"cursor": "garbage!"}, headers=h)
    assert r.status_code == 400 and r.json()["code"] == "invalid_cursor"
    assert (await client.get(URL, params={"unread": "maybe"}, headers=h)).status_code == 422
    assert (await client.get(URL, params={"limit": 0}, headers=h)).status_code == 422
    assert (await client.get(URL, params={"kind": "x" * 65}, headers=h)).status_code == 422
    r = await client.post(f"{URL}/read-all", headers=h, json={"everything": True})
    assert r.status_code == 422
    r = await client.post(f"{URL}/read-all", headers=h, json={"up_to": "yesterday"})
    assert r.status_code == 422
    r = await client.post(
        f"{URL}/read-all", headers={**h, "Content-Type": "application/json"}, content=b"{nope"
    )
    assert r.status_code == 400
    # Nothing was marked read by the refused calls.
    assert (await client.get(f"{URL}/{n.id}", headers=h)).json()["read"] is False


async def test_anonymous_and_api_clients_have_no_inbox(client, session, world):
    assert (await client.get(URL)).status_code == 401
    assert (await client.get(f"{URL}/unread-count")).status_code == 401
    api_client = ApiClient(
        name="数据平台", client_id="gjc_inbox", secret_hash=hash_password("s3cret-inbox"),
        scopes=["lists:read"], org_id=world.orgs["a1"].id,
    )
    session.add(api_client)
    await session.commit()
    token, _ = create_access_token(subject=str(api_client.id), kind="client", roles=[], scopes=["lists:read"])
    h = {"Authorization": f"Bearer {token}"}
    for r in (
        await client.get(URL, headers=h),
        await client.get(f"{URL}/unread-count", headers=h),
        await client.post(f"{URL}/read-all", headers=h),
        await client.get(f"{URL}/{uuid.uuid4()}", headers=h),
    ):
        assert r.status_code == 403, r.text


async def test_every_role_reads_its_own_inbox_and_only_that(client, session, world):
    names = list(world.users)
    created = {name: (await send(session, [world.users[name].id], title=f"给{name}"))[0] for name in names}
    for name in names:
        r = await client.get(URL, headers=world.h(name))
        assert r.status_code == 200, (name, r.text)
        assert [n["title"] for n in r.json()["items"]] == [f"给{name}"], name
        other = created[names[(names.index(name) + 1) % len(names)]]
        assert (await client.get(f"{URL}/{other.id}", headers=world.h(name))).status_code == 404, name
        r = await client.post(f"{URL}/{created[name].id}/read", headers=world.h(name))
        assert r.status_code == 200 and r.json()["read"] is True, name
