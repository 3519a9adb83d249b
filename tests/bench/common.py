"""Small helpers shared by the benchmarks: latency statistics and SQL capture."""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(seconds: list[float]) -> dict[str, Any]:
    values = sorted(seconds)
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(ms[-1], 3) if ms else None,
        "mean_ms": round(sum(ms) / len(ms), 3) if ms else None,
    }


@contextmanager
def capture_sql(engine: AsyncEngine) -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    """Every statement (and its positional parameters) the engine sends while the block runs,
    exactly as handed to asyncpg."""
    captured: list[tuple[str, tuple[Any, ...]]] = []

    def listener(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        captured.append((statement, tuple(parameters or ())))

    event.listen(engine.sync_engine, "before_cursor_execute", listener)
    try:
        yield captured
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", listener)


@contextmanager
def capture_round_trips(engine: AsyncEngine) -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    """Like `capture_sql`, plus the transaction boundaries the engine drives, as ("BEGIN", ()),
    ("COMMIT", ()) and ("ROLLBACK", ()) entries in the order they happen."""
    captured: list[tuple[str, tuple[Any, ...]]] = []

    def statement(
        conn: Any, cursor: Any, stmt: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        captured.append((stmt, tuple(parameters or ())))

    def boundary(name: str) -> Callable[..., None]:
        def listener(conn: Any, *args: Any) -> None:
            captured.append((name, ()))

        return listener

    listeners: list[tuple[str, Callable[..., None]]] = [
        ("before_cursor_execute", statement),
        ("begin", boundary("BEGIN")),
        ("commit", boundary("COMMIT")),
        ("rollback", boundary("ROLLBACK")),
    ]
    for name, fn in listeners:
        event.listen(engine.sync_engine, name, fn)
    try:
        yield captured
    finally:
        for name, fn in listeners:
            event.remove(engine.sync_engine, name, fn)


_SCAN = re.compile(
    r"(?:Parallel )?(?:Index Only Scan|Index Scan|Bitmap Index Scan|Bitmap Heap Scan|Seq Scan"
    r"|CTE Scan|WorkTable Scan)(?: Backward)?(?: using \S+)? on \S+"
)


def plan_scans(plan_lines: list[str]) -> list[str]:
    """The access paths of a plan, e.g. ['Index Scan using uq_organizations_path on organizations']."""
    found: list[str] = []
    for line in plan_lines:
        m = _SCAN.search(line)
        if m:
            found.append(m.group(0))
    return found


async def timed_loop(
    call: Callable[[int], Awaitable[Any]], *, min_iter: int, max_iter: int, budget_s: float
) -> list[float]:
    """Run call(i) until max_iter, or until budget_s has passed and at least min_iter ran."""
    import time

    samples: list[float] = []
    start = time.perf_counter()
    i = 0
    while i < max_iter and (i < min_iter or time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        await call(i)
        samples.append(time.perf_counter() - t)
        i += 1
    return samples
