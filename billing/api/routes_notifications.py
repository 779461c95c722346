"""``GET /v1/notifications``: the notifications and where their delivery stands, as ``billing notifications
list`` shows them. Thin: parse, call ``billing.notify``, shape. (Delivering them is the service's own work:
``billing serve`` and ``billing notifications deliver``.)"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Query
from fastapi.routing import APIRouter
from sqlalchemy import Engine

from billing.api.auth import ApiKey, require_unbound_key
from billing.api.deps import api_engine
from billing.api.errors import ERROR_RESPONSES
from billing.api.pagination import Page, page_params
from billing.api.schemas import NotificationListOut, NotificationOut
from billing.notify import Notification, notifications_page

__all__ = ["router"]

router = APIRouter(tags=["notifications"], responses=ERROR_RESPONSES)


def notification_out(n: Notification) -> NotificationOut:
    return NotificationOut(
        id=n.id, kind=n.kind, customer=n.customer, period=n.period, status=n.status,  # type: ignore[arg-type]
        attempts=n.attempts, last_error=n.last_error, created_at=n.created_at, next_attempt_at=n.next_attempt_at,
        sent_at=n.sent_at, subscription_id=n.subscription_id, invoice_id=n.invoice_id, threshold=n.threshold_key,
        level=n.level, payload=dict(n.payload),
    )


@router.get(
    "/v1/notifications", summary="List notifications", response_model=NotificationListOut,
    operation_id="listNotifications",
)
def list_notifications(
    engine: Annotated[Engine, Depends(api_engine)],
    key: Annotated[ApiKey, Depends(require_unbound_key)],
    page: Annotated[Page, Depends(page_params)],
    status: Annotated[Literal["pending", "sent", "dead"] | None, Query(description="Only those of this status.")] = (
        None
    ),
    customer: Annotated[str | None, Query(max_length=255, description="Only this customer's.")] = None,
) -> NotificationListOut:
    """The notifications, oldest first, a page at a time (the cursors are notification ids): ``pending`` until
    every channel took it, ``sent``, or ``dead`` once its attempts ran out (``billing notifications retry``)."""
    found, more = notifications_page(
        engine, limit=page.limit, after=page.starting_after, before=page.ending_before, status=status,
        customer=customer,
    )
    return NotificationListOut(data=[notification_out(n) for n in found], has_more=more)
