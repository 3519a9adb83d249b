from __future__ import annotations

import uuid

from pydantic import BaseModel, Field


class UnitStanding(BaseModel):
    """One unit's figures for one year, computed from the records (see `standings.service`)."""

    unit_id: uuid.UUID
    unit_name: str
    community_id: uuid.UUID
    year: int
    agreements_active: int = Field(description="Agreements in force at some time during the year")
    commitments_promised: int = Field(
        description="The unit's checkable commitments (resources, projects, members to report)"
    )
    commitments_kept: int = Field(description="Of those, the ones the records show kept by the year's end")
    commitments_other: int = Field(
        description="Activities and other commitments the records cannot check (left to the evaluation)"
    )
    projects_taken: int = Field(description="Projects the unit came to lead during the year")
    projects_taken_paired: int = Field(description="… by first claim as the community's paired unit")
    projects_taken_hall: int = Field(description="… claimed in the open hall")
    projects_taken_assigned: int = Field(description="… assigned by staff")
    projects_completed: int = Field(description="Projects the unit leads completed during the year")
    completion_rate: float | None = Field(
        description="Share of the projects taken during the year completed by its end (None: none taken)"
    )
    evaluation_score: float | None = Field(description="The communities' revealed ratings, average (0–100)")
    members_reported: int = Field(
        description="The unit's employees (party members) with an accepted 双报到 during the year"
    )


class RankedUnit(UnitStanding):
    rank: int = Field(description="1 is first; units with the same figures share a rank")


class UnitRanking(BaseModel):
    org_id: uuid.UUID = Field(description="The street (or community) ranked")
    year: int
    items: list[RankedUnit]
    next_cursor: str | None = None


class UnitStandingDetail(BaseModel):
    standing: UnitStanding
    rank: int | None = Field(description="The unit's rank in its street that year")
    ranked: int = Field(description="Units ranked in the street")
    street_id: uuid.UUID | None
    history: list[UnitStanding] = Field(description="Year by year, oldest first, up to the year asked")


class CommunityStanding(BaseModel):
    community_id: uuid.UUID
    community_name: str
    year: int
    agreements_active: int = Field(description="Agreements in force at some time during the year")
    commitments_promised: int = Field(
        description="The community's checkable commitments (resources, projects)"
    )
    commitments_kept: int
    commitments_other: int
    projects_completed: int = Field(description="The community's projects completed during the year")
    evaluation_score: float | None = Field(description="Its units' revealed ratings, average (0–100)")
    members_reported: int = Field(description="Members whose 双报到 to the community stood during the year")
    units_reported: int = Field(description="Units whose 双报到 to the community stood during the year")


class RankedCommunity(CommunityStanding):
    rank: int


class CommunityRanking(BaseModel):
    org_id: uuid.UUID
    year: int
    items: list[RankedCommunity]
    next_cursor: str | None = None


class CommunityStandingDetail(BaseModel):
    standing: CommunityStanding
    history: list[CommunityStanding] = Field(description="Year by year, oldest first, up to the year asked")
