"""`gongjian import-lists FILE --parent-org-id ID [--create-missing] [--partial]`: the same import,
synchronously, with the report on stdout (exit 0 completed, 1 failed, 2 refused)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid

from sqlalchemy import func, select

from gongjian.lists.imports.models import ListImport
from gongjian.lists.models import Need, Resource
from tests.lists_imports.conftest import ROOT, small, workbook


def _gongjian(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TEST_DATABASE_URL", "LOAD_DEMO")}
    env["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "gongjian.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


async def _count(session, model) -> int:
    return (await session.execute(select(func.count()).select_from(model))).scalar_one()


async def test_cli_imports_a_file(database_url, session, w, tmp_path):
    path = tmp_path / "lists.json"
    path.write_text(json.dumps(small(), ensure_ascii=False), encoding="utf-8")
    parent = str(w.orgs["street_a"].id)
    done = await asyncio.to_thread(
        _gongjian, database_url, "import-lists", str(path), "--parent-org-id", parent, "--create-missing"
    )
    assert done.returncode == 0, done.stderr
    assert ": completed" in done.stdout
    assert "communities: created 1, updated 0, unchanged 0, skipped 0" in done.stdout
    assert "resources: created 2" in done.stdout and "needs: created 2" in done.stdout
    assert await _count(session, Resource) == 2
    imp = (await session.execute(select(ListImport))).scalar_one()
    assert (imp.actor_kind, imp.actor_name, imp.filename) == ("system", "cli", "lists.json")

    # The same as a workbook: already there.
    xlsx = tmp_path / "lists.xlsx"
    xlsx.write_bytes(workbook(small()))
    again = await asyncio.to_thread(
        _gongjian, database_url, "import-lists", str(xlsx), "--parent-org-id", parent
    )
    assert again.returncode == 0, again.stderr
    assert "resources: created 0, updated 0, unchanged 2" in again.stdout


async def test_cli_reports_row_errors_and_writes_nothing(database_url, session, w, tmp_path):
    doc = small()
    doc["needs"][0]["urgency"] = "asap"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    parent = str(w.orgs["street_a"].id)
    failed = await asyncio.to_thread(
        _gongjian, database_url, "import-lists", str(path), "--parent-org-id", parent, "--create-missing"
    )
    assert failed.returncode == 1, failed.stderr
    assert ": failed" in failed.stdout and "errors (1):" in failed.stdout
    assert "needs row 1 (N001) urgency: invalid value 'asap'" in failed.stdout
    assert await _count(session, Need) == 0

    partial = await asyncio.to_thread(
        _gongjian,
        database_url,
        "import-lists",
        str(path),
        "--parent-org-id",
        parent,
        "--create-missing",
        "--partial",
    )
    assert partial.returncode == 0 and "needs: created 1, updated 0, unchanged 0, skipped 1" in partial.stdout

    unknown = await asyncio.to_thread(
        _gongjian, database_url, "import-lists", str(path), "--parent-org-id", str(uuid.uuid4())
    )
    assert unknown.returncode == 2 and "not found" in unknown.stderr
    missing = await asyncio.to_thread(
        _gongjian, database_url, "import-lists", str(tmp_path / "none.json"), "--parent-org-id", parent
    )
    assert missing.returncode == 2 and "cannot read" in missing.stderr
