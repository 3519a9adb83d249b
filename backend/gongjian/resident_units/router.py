from fastapi import APIRouter

router = APIRouter(prefix="/api/v1/resident-units", tags=["resident-units"])
