"""GET /explorer/rounds/{round_id}: the round explorer (filled by the explorer work)"""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["router"]

router = APIRouter()
