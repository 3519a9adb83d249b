"""Closed-loop HTTP load: N tasks, each sending its next request as soon as the last one answered.

Two clients with the same measurement loop:

- `raw` (default): a minimal HTTP/1.1 keep-alive client on asyncio streams, one connection per task.
  It costs ~0.02 ms of CPU per request, so on a 2-core machine the servers, not the client, set
  the pace (what wrk would do, without requiring wrk).
- `httpx`: httpx.AsyncClient, one shared client with a pool of N connections. Convenient, but it
  costs 1-3 ms of CPU per request here, more than the bare server spends answering, so on a small
  machine it saturates first and squeezes every server towards the same figure (its ceiling is
  reported next to the results).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Protocol
from urllib.parse import urlparse

import httpx

from tests.bench.common import latency_summary


class Meter(Protocol):
    def sample(self) -> dict[str, float | None]: ...


class RawConnection:
    """One keep-alive HTTP/1.1 connection; enough of the protocol for GET + Content-Length/chunked."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.head_tail = (
            f"Host: {host}:{port}\r\nUser-Agent: gongjian-bench\r\nAccept: */*\r\n{extra}\r\n".encode()
        )
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def get(self, path: str) -> int:
        if self.writer is None:
            await self._open()
        assert self.reader is not None and self.writer is not None
        try:
            self.writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + self.head_tail)
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            headers = head.lower()
            if b"\r\ncontent-length:" in headers:
                i = headers.index(b"\r\ncontent-length:") + 17
                await self.reader.readexactly(int(headers[i : headers.index(b"\r\n", i)]))
            elif b"\r\ntransfer-encoding: chunked" in headers:
                while True:
                    size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    await self.reader.readexactly(size + 2)
                    if size == 0:
                        break
            if b"\r\nconnection: close" in headers:
                await self.close()
            return status
        except BaseException:
            await self.close()
            raise


async def run_load(
    base: str,
    paths: list[str],
    headers: dict[str, str],
    *,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    client: str = "raw",
    meter: Meter | None = None,
) -> dict[str, Any]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    cpu: dict[str, dict[str, float | None]] = {}
    done = 0
    answered = 0  # including warm-up
    t0 = time.perf_counter()
    measure_from = t0 + warmup_s
    end = measure_from + duration_s
    url = urlparse(base)
    shared: httpx.AsyncClient | None = None
    if client == "httpx":
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        shared = httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30)
    elif client != "raw":
        raise ValueError(f"unknown client {client!r}")

    async def worker(k: int) -> None:
        nonlocal done, answered
        conn = RawConnection(url.hostname or "127.0.0.1", url.port or 80, headers) if shared is None else None
        i = k
        try:
            while True:
                start = time.perf_counter()
                if start >= end:
                    return
                path = paths[i % len(paths)]
                i += concurrency
                try:
                    if shared is not None:
                        status = (await shared.get(path)).status_code
                    else:
                        assert conn is not None
                        status = await asyncio.wait_for(conn.get(path), 30)
                    ok = status == 200
                    if not ok:
                        errors[str(status)] = errors.get(str(status), 0) + 1
                except (
                    OSError,
                    TimeoutError,
                    ValueError,
                    asyncio.IncompleteReadError,
                    httpx.HTTPError,
                ) as exc:
                    ok = False
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                finish = time.perf_counter()
                answered += ok
                if start >= measure_from and finish <= end and ok:
                    latencies.append(finish - start)
                    done += 1
        finally:
            if conn is not None:
                await conn.close()

    async def metering() -> None:
        if meter is None:
            return
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        cpu["start"] = meter.sample()
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        cpu["end"] = meter.sample()

    try:
        await asyncio.gather(metering(), *(worker(k) for k in range(concurrency)))
    finally:
        if shared is not None:
            await shared.aclose()
    out: dict[str, Any] = {
        "requests_per_s": round(done / duration_s, 1),
        "requests": done,
        "requests_with_warmup": answered,
        "errors": errors,
        "latency": latency_summary(latencies),
        "client": client,
    }
    if cpu and done:
        per_req: dict[str, float | None] = {}
        busy: dict[str, float | None] = {}
        for key in ("app", "db", "client"):
            a, b = cpu["start"].get(key), cpu["end"].get(key)
            used = (b - a) if a is not None and b is not None else None
            per_req[key] = round(1000 * used / done, 3) if used is not None else None
            busy[key] = round(used / duration_s, 2) if used is not None else None
        out["cpu_ms_per_request"] = per_req
        out["cpu_cores_busy"] = busy
    return out
