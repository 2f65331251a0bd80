"""GET /holder: the holder's page (filled by the holder-page work)"""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["router"]

router = APIRouter()
