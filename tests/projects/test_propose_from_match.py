"""`propose_from_match`: what the matching engine calls when a suggestion is accepted."""

from __future__ import annotations

import asyncio

import pytest

from gongjian.auth.service import load_principal
from gongjian.core import db
from gongjian.core.errors import ProblemError
from gongjian.lists.models import Need, Resource
from gongjian.projects import service
from tests.projects.helpers import audit_rows, fetch, make_need, make_resource


async def principal_of(session, world, who):
    return await load_principal(session, {"sub": str(world.users[who].id), "kind": "user"})


async def test_a_match_becomes_a_proposed_project(client, world, session):
    need = await make_need(session, world)
    resource = await make_resource(session, world, quantity=6)
    async with db.sessionmaker()() as s:
        staff = await principal_of(s, world, "staff")
        n, r = await s.get_one(Need, need.id), await s.get_one(Resource, resource.id)
        project = await service.propose_from_match(s, staff, need=n, resource=r, quantity=2, title=None)
        await s.commit()
    assert project.state == "proposed" and project.title == need.title
    assert project.plan_from == need.wanted_from and project.plan_to == need.wanted_to
    r = await client.get(f"/api/v1/projects/{project.id}", headers=world.h("secretary"))
    body = r.json()
    assert [n["id"] for n in body["needs"]] == [str(need.id)] and body["needs"][0]["state"] == "in_project"
    assert [(c["resource_id"], c["quantity"]) for c in body["commitments"]] == [(str(resource.id), 2)]
    (row,) = await audit_rows("project", project.id)
    assert row.action == "project.propose" and "accepted match" in row.reason


async def test_without_quantity_nothing_is_committed_and_a_title_is_kept(world, session):
    need = await make_need(session, world)
    resource = await make_resource(session, world, quantity=6)
    async with db.sessionmaker()() as s:
        staff = await principal_of(s, world, "secretary")
        n, r = await s.get_one(Need, need.id), await s.get_one(Resource, resource.id)
        project = await service.propose_from_match(
            s, staff, need=n, resource=r, quantity=None, title="健康义诊进社区"
        )
        await s.commit()
    assert project.title == "健康义诊进社区"
    assert await fetch("SELECT count(*) FROM resource_commitments") == [(0,)]
    assert await fetch("SELECT remaining_quantity FROM resources") == [(6,)]


async def test_a_refusal_leaves_nothing_even_if_the_caller_goes_on(world, session):
    need = await make_need(session, world)
    resource = await make_resource(session, world, quantity=1)
    async with db.sessionmaker()() as s:
        staff = await principal_of(s, world, "staff")
        n, r = await s.get_one(Need, need.id), await s.get_one(Resource, resource.id)
        with pytest.raises(ProblemError) as refused:
            await service.propose_from_match(s, staff, need=n, resource=r, quantity=5, title=None)
        assert refused.value.code == "insufficient_quantity"
        await s.commit()  # the caller commits its own work: none of ours is in it
    assert await fetch("SELECT count(*) FROM projects") == [(0,)]
    assert await fetch("SELECT state FROM needs") == [("accepted",)]
    assert await audit_rows("project") == []


async def test_out_of_scope_or_without_the_right(world, session):
    need = await make_need(session, world, "b1")
    resource = await make_resource(session, world, "b1")
    async with db.sessionmaker()() as s:
        n, r = await s.get_one(Need, need.id), await s.get_one(Resource, resource.id)
        for who, code in (("secretary", "not_found"), ("gridworker", "forbidden")):
            with pytest.raises(ProblemError) as refused:
                await service.propose_from_match(
                    s, await principal_of(s, world, who), need=n, resource=r, quantity=None, title=None
                )
            assert refused.value.code == code


async def test_two_matches_of_one_need_accepted_at_once_make_one_project(world, session):
    need = await make_need(session, world)
    first = await make_resource(session, world, quantity=3)
    second = await make_resource(session, world, quantity=3, title="健康讲座")

    async def accept(resource_id):
        async with db.sessionmaker()() as s:
            staff = await principal_of(s, world, "staff")
            n, r = await s.get_one(Need, need.id), await s.get_one(Resource, resource_id)
            try:
                await service.propose_from_match(s, staff, need=n, resource=r, quantity=1, title=None)
                await s.commit()
                return "ok"
            except ProblemError as exc:
                await s.rollback()
                return exc.code

    results = await asyncio.gather(accept(first.id), accept(second.id))
    assert sorted(results) == ["illegal_transition", "ok"]
    assert await fetch("SELECT count(*) FROM projects") == [(1,)]
    assert await fetch("SELECT count(*) FROM resource_commitments") == [(1,)]
    assert sorted(await fetch("SELECT remaining_quantity FROM resources")) == [(2,), (3,)]
