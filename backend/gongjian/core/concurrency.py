"""Optimistic concurrency over HTTP: ETag on read, If-Match on update."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header, Response

from gongjian.core.errors import ProblemError

IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        max_length=100,
        description="The ETag from the last read; a stale value answers 412",
    ),
]


def etag_of(obj: Any) -> str:
    return f'"{obj.version}"'


def set_etag(response: Response, obj: Any) -> None:
    response.headers["ETag"] = etag_of(obj)


def check_if_match(if_match: str | None, obj: Any) -> None:
    """Refuse a write based on a stale read. Without If-Match the row version still guards
    the UPDATE itself, so two concurrent writers never both win."""
    if if_match is None:
        return
    candidates = {c.strip().removeprefix("W/") for c in if_match.split(",")}
    if "*" in candidates:
        return
    if etag_of(obj) not in candidates:
        raise ProblemError("precondition_failed")
