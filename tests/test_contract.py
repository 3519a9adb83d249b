"""The committed contract (openapi/openapi.json) is what the app serves, and it is complete.

When this fails after a change to a router or schema, regenerate the contract with
`make openapi` and commit it together with the change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gongjian.cli import openapi_document

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ROOT / "openapi" / "openapi.json"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
# Liveness and readiness probes: they answer 200 or (readyz) 503, never a 4xx.
PROBES = {"/healthz", "/readyz"}


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in sorted(doc["paths"].items())
        for method, op in sorted(item.items())
        if method in METHODS
    ]


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    assert CONTRACT.exists(), "openapi/openapi.json is missing: run `make openapi`"
    doc: dict[str, Any] = json.loads(CONTRACT.read_text(encoding="utf-8"))
    return doc


async def test_served_schema_equals_committed_contract(client, committed) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    served = r.json()
    if served != committed:
        served_ops = {(m, p) for m, p, _ in _operations(served)}
        committed_ops = {(m, p) for m, p, _ in _operations(committed)}
        changed = sorted(
            f"{m} {p}" for m, p, op in _operations(served)
            if (m, p) in committed_ops and op != committed["paths"][p][m.lower()]
        )
        components = sorted(_changed_keys(served.get("components", {}), committed.get("components", {})))
        pytest.fail(
            "openapi/openapi.json differs from the served schema; run `make openapi` and commit it.\n"
            f"  only served: {sorted(served_ops - committed_ops)}\n"
            f"  only committed: {sorted(committed_ops - served_ops)}\n"
            f"  changed operations: {changed}\n"
            f"  changed components: {components}"
        )


def _changed_keys(a: dict[str, Any], b: dict[str, Any]) -> set[str]:
    out = set()
    for section in set(a) | set(b):
        sa, sb = a.get(section, {}), b.get(section, {})
        out |= {f"{section}/{k}" for k in set(sa) | set(sb) if sa.get(k) != sb.get(k)}
    return out


def test_committed_contract_is_in_generated_form() -> None:
    # Byte for byte what `make openapi` writes (sorted keys, 2-space indent, UTF-8, final newline),
    # so regenerating it never produces a noisy diff.
    assert CONTRACT.read_text(encoding="utf-8") == openapi_document(), "run `make openapi`"


def test_every_operation_is_documented(committed) -> None:
    problems = []
    seen_ids: set[str] = set()
    for method, path, op in _operations(committed):
        where = f"{method} {path}"
        op_id = op.get("operationId")
        if not op_id:
            problems.append(f"{where}: no operationId")
        elif op_id in seen_ids:
            problems.append(f"{where}: duplicate operationId {op_id}")
        else:
            seen_ids.add(op_id)
        if not op.get("tags"):
            problems.append(f"{where}: no tags")
        if not (op.get("summary") or "").strip():
            problems.append(f"{where}: no summary")
        statuses = [s for s in op.get("responses", {}) if s != "default"]
        if not any(s.startswith("2") or s.startswith("3") for s in statuses):
            problems.append(f"{where}: no success response")
        errors = [s for s in statuses if s[0] in "45"]
        if path in PROBES:
            if path == "/readyz" and "503" not in errors:
                problems.append(f"{where}: the not-ready 503 is not documented")
            continue
        if not any(s.startswith("4") for s in errors):
            problems.append(f"{where}: no documented 4xx response")
        for status in errors:
            content = op["responses"][status].get("content", {})
            if "application/problem+json" not in content:
                problems.append(f"{where}: {status} is not documented as application/problem+json")
    assert not problems, "\n".join(problems)


def test_problem_model_and_security_are_declared(committed) -> None:
    schemas = committed["components"]["schemas"]
    assert "Problem" in schemas
    assert {"type", "title", "status", "code", "detail"} <= set(schemas["Problem"]["properties"])
    # Authenticated operations declare the OAuth2 password flow, so /docs can log in.
    flows = committed["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]
    assert flows["password"]["tokenUrl"] == "/api/v1/auth/token"
    for method, path, op in _operations(committed):
        if path.startswith("/api/v1/") and path != "/api/v1/auth/token" and "401" in op.get("responses", {}):
            assert op.get("security"), f"{method} {path} answers 401 but declares no security"
