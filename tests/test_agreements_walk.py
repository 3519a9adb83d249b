"""The checker's walk through the API: a template → a draft → sent → signed by both sides (one with
a handwritten image, one with a one-time code from the inbox) → the signed PDF, valid, in Chinese,
its hash verified publicly → an amendment supersedes it → the year's two-way evaluation → the
unit's standing. Every step also tries the tampering it must refuse."""

from __future__ import annotations

import hashlib
import io
import re
from typing import Any

import pytest
from pypdf import PdfReader

from gongjian.evaluations.service import local_year
from tests.agreements.helpers import image_b64
from tests.factories import PASSWORD, World, build_world

TITLE = "东湖社区与东湖供电所共建协议"
CLAUSES = [
    {
        "key": "co_organization",
        "title": "组织共建",
        "body": "{{community}}与{{unit}}结对共建，联合开展组织生活。",
    },
    {"key": "co_resources", "title": "资源共享", "body": "{{unit}}向{{community}}开放活动场地。"},
    {"key": "term", "title": "协议期限", "body": "自{{term_from}}起至{{term_to}}止。"},
]
AMENDED_CLAUSE = {"key": "co_activities", "title": "活动共办", "body": "双方每季度联合举办一次志愿服务活动。"}

# Signing happens now (the server's clock), so the evaluated year is the current one; the term
# covers it and the next, so the signed version stays `current` whatever day the test runs.
YEAR = local_year()


@pytest.fixture
async def world(session: Any) -> World:
    return await build_world(session)


def pdf_text(pdf: bytes) -> str:
    """Extracted text without whitespace: Chinese lines wrap anywhere."""
    reader = PdfReader(io.BytesIO(pdf))
    return re.sub(r"\s+", "", "".join(page.extract_text() for page in reader.pages))


def tampered(h: str) -> str:
    return h[:-1] + ("0" if h[-1] != "0" else "1")


async def test_the_checkers_walk(client, world):
    w = world

    async def call(method: str, url: str, who: str | None, expect: int, **kw: Any) -> Any:
        headers = {**(w.h(who) if who else {}), **kw.pop("headers", {})}
        r = await client.request(method, url, headers=headers, **kw)
        assert r.status_code == expect, (method, url, who, r.text)
        if r.headers.get("content-type", "").startswith("application/pdf"):
            return r.content
        return r.json() if r.content else None

    async def refused(method: str, url: str, who: str, expect: int, code: str, **kw: Any) -> None:
        assert (await call(method, url, who, expect, **kw))["code"] == code

    async def verify(number: str, content_hash: str) -> dict[str, Any]:
        body = await call(
            "GET", "/api/v1/agreements/verify", None, 200, params={"number": number, "hash": content_hash}
        )
        assert set(body) == {"number", "version_no", "status"}  # nothing else is revealed
        return dict(body)

    def sign_body(content_hash: str, **kw: Any) -> dict[str, Any]:
        return {
            "content_hash": content_hash,
            **({"password": PASSWORD} if "one_time_code" not in kw else {}),
            **kw,
        }

    async def inbox_code(who: str) -> str:
        inbox = await call(
            "GET", "/api/v1/notifications", who, 200, params={"kind": "agreement.signing_code"}
        )
        match = re.search(r"验证码(\d{6})", inbox["items"][0]["body"])
        assert match, inbox
        return match.group(1)

    # --- a template (street staff), a draft for community a1 and unit a1 (its secretary) ---------
    template = await call(
        "POST",
        "/api/v1/agreement-templates",
        "street",
        201,
        json={
            "org_id": str(w.orgs["street_a"].id),
            "name": "社区与驻区单位共建协议（范本）",
            "clauses": CLAUSES,
        },
    )
    term = {"term_from": f"{YEAR}-01-01", "term_to": f"{YEAR + 1}-12-31"}
    draft = await call(
        "POST",
        "/api/v1/agreements",
        "secretary",
        201,
        json={
            "community_id": str(w.orgs["a1"].id),
            "unit_id": str(w.units["a1"].id),
            "template_id": template["id"],
            "title": TITLE,
            **term,
            "commitments": [
                {
                    "side": "unit",
                    "kind": "activity",
                    "recurrence": "monthly",
                    "description": "每月参加统一活动日",
                },
                {"side": "unit", "kind": "members_report", "members_count": 12},
            ],
        },
    )
    aid, number = draft["id"], draft["number"]
    url = f"/api/v1/agreements/{aid}"
    assert draft["state"] == "draft" and draft["content_hash"] is None
    assert draft["clauses"][0]["body"] == "东湖社区党委与东湖供电所结对共建，联合开展组织生活。"
    # A draft is edited freely; a term ending before it starts is refused.
    await call("PATCH", url, "secretary", 200, json={"title": TITLE})
    await refused("PATCH", url, "secretary", 422, "invalid_term", json={"term_to": f"{YEAR - 1}-12-31"})

    # --- sent: frozen and hashed; no more edits -----------------------------------------------
    sent = await call("POST", f"{url}/send", "secretary", 200)
    v1_hash = sent["content_hash"]
    assert sent["state"] == "pending_signatures" and re.fullmatch(r"[0-9a-f]{64}", v1_hash)
    await refused("PATCH", url, "secretary", 409, "agreement_frozen", json={"title": "改过的标题"})
    await refused("POST", f"{url}/send", "secretary", 409, "illegal_transition")
    assert (await verify(number, v1_hash))["status"] == "not_signed"
    assert (await call("GET", f"{url}/document", "secretary", 409))["code"] == "document_not_ready"
    # Both signers were told in their inbox.
    for who in ("secretary", "liaison"):
        inbox = await call("GET", "/api/v1/notifications", who, 200, params={"kind": "agreement.sent"})
        assert [n["payload"]["content_hash"] for n in inbox["items"]] == [v1_hash]

    # --- signing: the wrong people and the wrong hash are refused -------------------------------
    signatures = f"{url}/signatures"
    await refused(
        "POST", signatures, "liaison", 409, "content_hash_mismatch", json=sign_body(tampered(v1_hash))
    )
    await refused("POST", signatures, "staff", 403, "forbidden", json=sign_body(v1_hash))  # no signing right
    await refused("POST", signatures, "secretary2", 404, "not_found", json=sign_body(v1_hash))  # other street
    await refused(
        "POST", signatures, "liaison", 403, "not_authorized_signer", json=sign_body(v1_hash, side="community")
    )
    await refused(
        "POST",
        signatures,
        "liaison",
        403,
        "reauthentication_failed",
        json=sign_body(v1_hash, password="Wrong@2026"),
    )
    # The community's org_admin re-authenticates with the password; signing again is refused.
    one = await call("POST", signatures, "secretary", 201, json=sign_body(v1_hash))
    assert one["state"] == "pending_signatures"
    await refused("POST", signatures, "secretary", 409, "already_signed", json=sign_body(v1_hash))
    # The unit's liaison signs on the phone with a handwritten PNG: the agreement is active.
    v1 = await call(
        "POST",
        signatures,
        "liaison",
        201,
        json=sign_body(v1_hash, signature_image=image_b64(size=(300, 100))),
        headers={"User-Agent": "MicroMessenger/8.0"},
    )
    assert v1["state"] == "active" and v1["has_document"]
    assert {
        (s["side"], s["signer_name"], s["auth_method"], s["has_image"], s["content_hash"])
        for s in v1["signatures"]
    } == {
        ("community", "secretary", "password", False, v1_hash),
        ("unit", "liaison", "password", True, v1_hash),
    }
    await refused("POST", signatures, "liaison", 409, "illegal_transition", json=sign_body(v1_hash))
    await refused("PATCH", url, "secretary", 409, "agreement_frozen", json={"title": "改过的标题"})

    # --- the signed PDF: valid, Chinese text, its hash verifies publicly ----------------------
    await refused("GET", f"{url}/document", "secretary2", 404, "not_found")
    pdf = await call("GET", f"{url}/document", "liaison", 200)
    assert pdf.startswith(b"%PDF-") and hashlib.sha256(pdf).hexdigest() == v1["document_sha256"]
    text = pdf_text(pdf)
    for expected in (
        TITLE,
        "组织共建",
        "东湖社区党委与东湖供电所结对共建，联合开展组织生活。",
        v1_hash,
        "甲方签署",
        "乙方签署",
    ):
        assert expected in text, expected
    assert sum(len(p.images) for p in PdfReader(io.BytesIO(pdf)).pages) == 1  # the handwritten signature
    assert await verify(number, v1_hash) == {"number": number, "version_no": 1, "status": "current"}
    for bad_number, bad_hash in (
        (number, tampered(v1_hash)),
        (number, v1_hash[:40]),
        ("GJ-2099-9999", v1_hash),
        (number, "' OR 1=1 --"),
    ):
        assert await verify(bad_number, bad_hash) == {
            "number": bad_number,
            "version_no": None,
            "status": "unknown",
        }

    # --- an amendment: a new version, signed again; it supersedes the first ------------------
    v2 = await call("POST", f"{url}/amendments", "secretary", 201)
    v2_url = f"/api/v1/agreements/{v2['id']}"
    assert (v2["number"], v2["version_no"], v2["previous_id"], v2["state"]) == (number, 2, aid, "draft")
    await refused("POST", f"{url}/amendments", "secretary", 409, "agreement_version_open")
    v2 = await call(
        "PATCH",
        v2_url,
        "secretary",
        200,
        json={
            "clauses": [*v2["clause_sources"], AMENDED_CLAUSE],
            "commitments": [
                *[
                    {k: c[k] for k in ("side", "kind", "recurrence", "members_count", "description")}
                    for c in v2["commitments"]
                ],
                {"side": "unit", "kind": "other", "description": "向社区居民开放职工食堂"},
            ],
        },
    )
    v2 = await call("POST", f"{v2_url}/send", "secretary", 200)
    v2_hash = v2["content_hash"]
    assert v2_hash != v1_hash
    await refused("PATCH", v2_url, "secretary", 409, "agreement_frozen", json={"title": "改过的标题"})
    # The signer looking at the old version: its hash no longer signs.
    v2_signatures = f"{v2_url}/signatures"
    await refused("POST", v2_signatures, "liaison", 409, "content_hash_mismatch", json=sign_body(v1_hash))
    # Until both sign the amendment, the first version stays current.
    assert (await verify(number, v1_hash))["status"] == "current"
    assert (await verify(number, v2_hash))["status"] == "not_signed"
    # The secretary re-authenticates with a one-time code, read from the inbox.
    await call("POST", f"{v2_url}/signing-codes", "secretary", 201)
    code = await inbox_code("secretary")
    await refused(
        "POST",
        v2_signatures,
        "liaison",
        403,
        "reauthentication_failed",
        json=sign_body(v2_hash, one_time_code=code),
    )  # the secretary's code is no code for the liaison
    signed = await call("POST", v2_signatures, "secretary", 201, json=sign_body(v2_hash, one_time_code=code))
    assert signed["signatures"][0]["auth_method"] == "one_time_code"
    await refused(
        "POST", v2_signatures, "secretary", 409, "already_signed", json=sign_body(v2_hash, one_time_code=code)
    )
    v2 = await call(
        "POST", v2_signatures, "liaison", 201, json=sign_body(v2_hash, signature_image=image_b64())
    )
    assert v2["state"] == "active" and v2["has_document"]
    old = await call("GET", url, "secretary", 200)
    assert old["state"] == "superseded" and old["superseded_by_id"] == v2["id"]
    assert await verify(number, v2_hash) == {"number": number, "version_no": 2, "status": "current"}
    assert await verify(number, v1_hash) == {"number": number, "version_no": 1, "status": "superseded"}
    assert (await verify(number, tampered(v2_hash)))["status"] == "unknown"
    # Both documents stay downloadable; the new one carries the amendment.
    assert v1_hash in pdf_text(await call("GET", f"{url}/document", "secretary", 200))
    text = pdf_text(await call("GET", f"{v2_url}/document", "secretary", 200))
    assert TITLE in text and AMENDED_CLAUSE["body"] in text and v2_hash in text and "第2版" in text
    # The superseded version's record stays as it was: no edit, no second amendment from it.
    await refused("PATCH", url, "secretary", 409, "illegal_transition", json={"title": "改过的标题"})
    await refused("POST", f"{url}/amendments", "secretary", 409, "illegal_transition")

    # --- the year's two-way evaluation ------------------------------------------------------
    await refused("POST", f"{v2_url}/evaluation-windows", "liaison", 403, "forbidden", json={"year": YEAR})
    window = await call("POST", f"{v2_url}/evaluation-windows", "secretary", 201, json={"year": YEAR})
    await refused(
        "POST", f"{url}/evaluation-windows", "secretary", 409, "evaluation_window_exists", json={"year": YEAR}
    )
    assert (window["agreement_id"], window["status"], window["revealed"]) == (v2["id"], "open", False)
    submissions = f"/api/v1/evaluation-windows/{window['id']}/submissions"
    window_url = f"/api/v1/evaluation-windows/{window['id']}"
    rating_of_unit = {
        "commitments_kept": 9,
        "activities_joined": 8,
        "members_reported": 7,
        "responsiveness": 10,
        "resources_shared": 6,
    }  # weights 30/20/20/15/15 → 81.00
    rating_of_community = dict.fromkeys(
        ["commitments_kept", "support", "responsiveness", "activities_organised"], 8
    )
    await refused("POST", submissions, "street", 403, "evaluation_not_rater", json={"scores": rating_of_unit})
    mine = await call(
        "POST", submissions, "secretary", 201, json={"scores": rating_of_unit, "comment": "履约良好"}
    )
    assert (mine["side"], mine["total"]) == ("community", 81.0)
    await refused(
        "POST", submissions, "staff", 409, "evaluation_already_submitted", json={"scores": rating_of_unit}
    )

    def sides(window: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {s["side"]: s for s in window["sides"]}

    # The unit learns only that the community has submitted, not its rating.
    seen = sides(await call("GET", window_url, "liaison", 200))
    assert seen["community"]["submitted"] and seen["community"]["submission"] is None
    theirs = await call("POST", submissions, "liaison", 201, json={"scores": rating_of_community})
    assert (theirs["side"], theirs["total"]) == ("unit", 80.0)
    await refused(
        "POST",
        submissions,
        "liaison",
        409,
        "evaluation_already_submitted",
        json={"scores": rating_of_community},
    )
    # Both submitted: each sees the other's rating.
    for who, other, total in (("liaison", "community", 81.0), ("secretary", "unit", 80.0)):
        seen_now = await call("GET", window_url, who, 200)
        assert seen_now["revealed"] and seen_now["can_submit"] == []
        assert sides(seen_now)[other]["submission"]["total"] == total

    # --- the unit's standing reflects the agreement in force and the evaluation --------------
    standing = await call(
        "GET", f"/api/v1/standings/units/{w.units['a1'].id}", "liaison", 200, params={"year": YEAR}
    )
    s = standing["standing"]
    assert (s["year"], s["agreements_active"], s["evaluation_score"]) == (YEAR, 1, 81.0)
    # The commitments are the amendment's: the members to report (checkable, not kept: none reported)
    # and the monthly activity day and the canteen (left to the evaluation).
    assert (s["commitments_promised"], s["commitments_kept"], s["commitments_other"]) == (1, 0, 2)
    assert standing["rank"] == 1 and standing["street_id"] == str(w.orgs["street_a"].id)
    community = await call(
        "GET", f"/api/v1/standings/communities/{w.orgs['a1'].id}", "secretary", 200, params={"year": YEAR}
    )
    assert (community["standing"]["agreements_active"], community["standing"]["evaluation_score"]) == (
        1,
        80.0,
    )
    # Another street's people see none of it.
    await refused(
        "GET",
        f"/api/v1/standings/units/{w.units['a1'].id}",
        "secretary2",
        404,
        "not_found",
        params={"year": YEAR},
    )
    await refused("GET", window_url, "secretary2", 404, "not_found")
