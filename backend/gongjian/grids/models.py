"""Grid cells (网格) of a community, the people who run them, and the buildings in them."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Double,
    ForeignKey,
    Index,
    Numeric,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from gongjian.core.access import Scope
from gongjian.core.db import Base, IdMixin, TimestampMixin, VersionedMixin


class GridLayer(StrEnum):
    """多网融合: one cell carries several management layers."""

    party = "party"  # 党建网格
    public_order = "public_order"  # 综治网格
    sanitation = "sanitation"  # 环卫网格


class GridRole(StrEnum):
    leader = "leader"  # 网格长
    worker = "worker"  # 网格员


# The bounding box as a core PostgreSQL `box`; a GiST index on it answers "which boxes
# contain / are near this point" (`&&`, and `<->` for nearest-first order) without PostGIS.
BBOX_SQL = "box(point(min_lng, min_lat), point(max_lng, max_lat))"


class GridCell(IdMixin, TimestampMixin, VersionedMixin, Base):
    """A grid cell under a community organization.

    `boundary` is the validated GeoJSON Polygon; the four bbox columns are derived from
    it on every write so a point look-up is prefiltered in SQL, then tested exactly.
    """

    __tablename__ = "grid_cells"
    __scope__ = Scope(org=("community_id",))

    community_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="RESTRICT"), index=True
    )
    code: Mapped[str] = mapped_column(String(50))
    name: Mapped[str] = mapped_column(String(100))
    boundary: Mapped[dict[str, Any]] = mapped_column(JSONB)
    min_lng: Mapped[float] = mapped_column(Double)
    min_lat: Mapped[float] = mapped_column(Double)
    max_lng: Mapped[float] = mapped_column(Double)
    max_lat: Mapped[float] = mapped_column(Double)
    layers: Mapped[list[str]] = mapped_column(ARRAY(String(16)), default=list, server_default="{}")
    party_branch_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="SET NULL"), index=True
    )
    external_ref: Mapped[str | None] = mapped_column(String(100), index=True)

    __table_args__ = (
        UniqueConstraint("community_id", "code"),
        CheckConstraint("min_lng <= max_lng AND min_lat <= max_lat", name="bbox_ordered"),
        CheckConstraint(
            "min_lng >= -180 AND max_lng <= 180 AND min_lat >= -90 AND max_lat <= 90", name="bbox_wgs84"
        ),
        Index("ix_grid_cells_bbox", text(BBOX_SQL), postgresql_using="gist"),
        Index("ix_grid_cells_layers", "layers", postgresql_using="gin"),
    )


class GridAssignment(IdMixin, TimestampMixin, Base):
    """A user serving a grid cell: its grid leader (at most one) or one of its grid workers."""

    __tablename__ = "grid_assignments"
    __scope__ = Scope(org=("community_id",))

    grid_cell_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("grid_cells.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # Denormalised from the cell so scope is one column.
    community_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="RESTRICT"), index=True
    )
    role: Mapped[GridRole] = mapped_column(String(16))

    __table_args__ = (
        UniqueConstraint("grid_cell_id", "user_id"),
        Index(
            "uq_grid_assignments_one_leader",
            "grid_cell_id",
            unique=True,
            postgresql_where=text("role = 'leader'"),
        ),
    )


class Building(IdMixin, TimestampMixin, VersionedMixin, Base):
    """A building (楼栋) in a grid cell, with its households and building leader (楼长)."""

    __tablename__ = "buildings"
    __scope__ = Scope(org=("community_id",))

    grid_cell_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("grid_cells.id", ondelete="RESTRICT"))
    # Denormalised from the cell so scope is one column; kept in step when a building moves.
    community_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="RESTRICT"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    address: Mapped[str | None] = mapped_column(String(200))
    households: Mapped[int] = mapped_column(default=0, server_default="0")
    floors: Mapped[int | None]
    units: Mapped[int | None]
    building_leader_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    building_leader_name: Mapped[str | None] = mapped_column(String(50))
    lat: Mapped[float | None] = mapped_column(Numeric(9, 6, asdecimal=False))
    lng: Mapped[float | None] = mapped_column(Numeric(9, 6, asdecimal=False))
    external_ref: Mapped[str | None] = mapped_column(String(100), index=True)

    __table_args__ = (
        UniqueConstraint("grid_cell_id", "name"),
        CheckConstraint("households >= 0", name="households_non_negative"),
        CheckConstraint("(lat IS NULL) = (lng IS NULL)", name="lat_lng_together"),
    )
