"""GET /sponsor: the sponsor's page (filled by the sponsor-page work)"""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["router"]

router = APIRouter()
