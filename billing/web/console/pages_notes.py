"""Notifications: ``GET /console/notifications?status=`` (pending by default; dead letters, sent) and
``POST /console/notifications/{id}/retry`` (a dead letter back to pending, due now: ``billing.notify.outbox.retry``,
as ``billing notifications retry`` does)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import Engine

from billing.db.notification_tables import NOTIFICATION_STATUSES
from billing.notify import outbox
from billing.staff import StaffSession
from billing.web.console.base import Form, act, console_engine, current_staff, posted_form, render

__all__ = ["router"]

router = APIRouter()
SHOWN = 200


@router.get("/notifications", include_in_schema=False)
def notifications_page(
    request: Request,
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
    status: str = "pending",
) -> Response:
    found = outbox.list_notifications(engine, status=status, limit=SHOWN)
    counts = {s: len(outbox.list_notifications(engine, status=s, limit=SHOWN + 1)) for s in ("pending", "dead")}
    return render(
        request, "notifications.html", engine, title="Notifications", section="notifications", status=status,
        notifications=found, statuses=NOTIFICATION_STATUSES, counts=counts, shown=SHOWN,
    )  # fmt: skip


@router.post("/notifications/{notification_id}/retry", include_in_schema=False)
def retry(
    notification_id: str,
    form: Annotated[Form, Depends(posted_form)],
    who: Annotated[StaffSession, Depends(current_staff)],
    engine: Annotated[Engine, Depends(console_engine)],
) -> Response:
    def again() -> str:
        back = outbox.retry(engine, notification_id)
        return f"Notification {back.id} is pending again, due now."

    return act(engine, who, "/notifications?status=dead", again)
