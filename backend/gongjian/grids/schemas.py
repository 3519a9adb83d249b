from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from gongjian.grids.models import GridLayer, GridRole

MAX_RINGS = 50
MAX_POSITIONS = 5000

_POSITION = {"type": "array", "minItems": 2, "maxItems": 3, "items": {"type": "number"}}
POLYGON_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "GeoJSONPolygon",
    "description": (
        "A GeoJSON Polygon (RFC 7946) in WGS-84 [lng, lat]: closed rings (first position equals the last) "
        "of at least 4 positions, the first ring the outer boundary, the others holes; it must not "
        "intersect itself. Anything else answers 422 `invalid_geometry` with the reason."
    ),
    "required": ["type", "coordinates"],
    "properties": {
        "type": {"type": "string", "enum": ["Polygon"]},
        "coordinates": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_RINGS,
            "items": {"type": "array", "minItems": 4, "items": _POSITION},
        },
    },
    "example": {
        "type": "Polygon",
        "coordinates": [
            [[120.10, 30.20], [120.11, 30.20], [120.11, 30.21], [120.10, 30.21], [120.10, 30.20]]
        ],
    },
}

# Checked by the service (shapely), so every defect answers `invalid_geometry` with its reason.
BoundaryIn = Annotated[Any, WithJsonSchema(POLYGON_JSON_SCHEMA)]

Code = Field(
    min_length=1, max_length=50, pattern=r"^[A-Za-z0-9_-]+$", description="Unique within the community"
)
LAYERS_DESCRIPTION = "多网融合: party 党建, public_order 综治, sanitation 环卫"


def _dedupe_layers(value: list[GridLayer] | None) -> list[GridLayer] | None:
    if value is None:
        return None
    return list(dict.fromkeys(value))


class GridCellCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    community_id: uuid.UUID = Field(description="An organization whose level is `community`")
    code: str = Code
    name: str = Field(min_length=1, max_length=100)
    boundary: BoundaryIn
    layers: list[GridLayer] = Field(
        default_factory=lambda: [GridLayer.party],
        min_length=1,
        max_length=10,
        description=LAYERS_DESCRIPTION,
    )
    party_branch_id: uuid.UUID | None = Field(
        default=None, description="The grid's party branch or group, an organization within the community"
    )
    leader_id: uuid.UUID | None = Field(default=None, description="The grid leader (网格长), a user")
    worker_ids: list[uuid.UUID] = Field(
        default_factory=list, max_length=50, description="Grid workers (网格员)"
    )
    external_ref: str | None = Field(default=None, max_length=100)

    _layers = field_validator("layers")(_dedupe_layers)


class GridCellUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str | None = Field(default=None, min_length=1, max_length=50, pattern=r"^[A-Za-z0-9_-]+$")
    name: str | None = Field(default=None, min_length=1, max_length=100)
    boundary: BoundaryIn = None
    layers: list[GridLayer] | None = Field(
        default=None, min_length=1, max_length=10, description=LAYERS_DESCRIPTION
    )
    party_branch_id: uuid.UUID | None = None
    external_ref: str | None = Field(default=None, max_length=100)

    _layers = field_validator("layers")(_dedupe_layers)


class PolygonOut(BaseModel):
    type: Literal["Polygon"]
    coordinates: list[list[list[float]]]


class GridPersonOut(BaseModel):
    user_id: uuid.UUID
    display_name: str
    role: GridRole
    created_at: datetime


class GridCellOut(BaseModel):
    id: uuid.UUID
    community_id: uuid.UUID
    code: str
    name: str
    boundary: PolygonOut
    bbox: list[float] = Field(description="[min_lng, min_lat, max_lng, max_lat]", min_length=4, max_length=4)
    layers: list[GridLayer]
    party_branch_id: uuid.UUID | None
    leader: GridPersonOut | None = Field(description="The grid leader, if any")
    external_ref: str | None
    version: int
    created_at: datetime
    updated_at: datetime


class GridLocation(BaseModel):
    cell: GridCellOut | None = Field(description="The cell containing the point, if any")
    nearest: GridCellOut | None = Field(
        description="When no cell contains the point: the nearest one in scope"
    )
    distance_m: float | None = Field(description="Metres from the point to `nearest`")


class GridAssignmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: uuid.UUID
    role: GridRole = GridRole.worker


class BuildingCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, description="Unique within the grid cell, e.g. 3幢")
    address: str | None = Field(default=None, max_length=200)
    households: int = Field(default=0, ge=0, le=100_000)
    floors: int | None = Field(default=None, ge=1, le=300)
    units: int | None = Field(default=None, ge=1, le=100, description="Number of entrances (单元)")
    building_leader_user_id: uuid.UUID | None = Field(
        default=None, description="The building leader (楼长) when they have an account"
    )
    building_leader_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=50,
        description="The building leader's name (defaults to the user's)",
    )
    lat: float | None = Field(default=None, ge=-90, le=90)
    lng: float | None = Field(default=None, ge=-180, le=180)
    external_ref: str | None = Field(default=None, max_length=100)


class BuildingUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grid_cell_id: uuid.UUID | None = Field(default=None, description="Move the building to another cell")
    name: str | None = Field(default=None, min_length=1, max_length=100)
    address: str | None = Field(default=None, max_length=200)
    households: int | None = Field(default=None, ge=0, le=100_000)
    floors: int | None = Field(default=None, ge=1, le=300)
    units: int | None = Field(default=None, ge=1, le=100)
    building_leader_user_id: uuid.UUID | None = None
    building_leader_name: str | None = Field(default=None, min_length=1, max_length=50)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lng: float | None = Field(default=None, ge=-180, le=180)
    external_ref: str | None = Field(default=None, max_length=100)


class BuildingOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    grid_cell_id: uuid.UUID
    community_id: uuid.UUID
    name: str
    address: str | None
    households: int
    floors: int | None
    units: int | None
    building_leader_user_id: uuid.UUID | None
    building_leader_name: str | None
    lat: float | None
    lng: float | None
    external_ref: str | None
    version: int
    created_at: datetime
    updated_at: datetime
