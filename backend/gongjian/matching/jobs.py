"""The bulk matching run as a background job."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from gongjian.core import jobs
from gongjian.matching import service

RUN_TASK = "matching.run"


# A failed run is marked failed with its error; staff start a new one (a retry would find it failed).
@jobs.job(RUN_TASK, retry=False)
async def run_matching(run_id: str) -> None:
    await service.execute_run(uuid.UUID(run_id))


async def enqueue_run(session: AsyncSession, run_id: uuid.UUID) -> None:
    await jobs.enqueue(session, RUN_TASK, run_id=str(run_id))
