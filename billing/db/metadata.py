"""Every package's table metadata, for migrations and tests. Each package owns its own tables."""

from __future__ import annotations

from sqlalchemy import MetaData

import billing.db.apikey_tables  # its tables live on BillingBase.metadata
import billing.db.approval_tables  # its tables live on BillingBase.metadata
import billing.db.coupon_tables  # its tables live on BillingBase.metadata
import billing.db.credit_tables  # its tables live on BillingBase.metadata
import billing.db.entitlement_tables  # its table lives on BillingBase.metadata
import billing.db.idempotency  # its table lives on BillingBase.metadata
import billing.db.installation  # its table lives on BillingBase.metadata
import billing.db.notification_tables  # its tables live on BillingBase.metadata
import billing.db.override_tables  # its table lives on BillingBase.metadata
import billing.db.payment_tables  # its table lives on BillingBase.metadata
import billing.db.portal_tables  # its table lives on BillingBase.metadata
import billing.db.reaction_tables  # its table lives on BillingBase.metadata
import billing.db.run_tables  # its table lives on BillingBase.metadata
import billing.db.scheduler_tables  # its tables live on BillingBase.metadata
import billing.db.staff_tables  # its table lives on BillingBase.metadata
import billing.db.stripe_tables  # noqa: F401  (its tables live on BillingBase.metadata)
from billing.db.tables import BillingBase
from invoices.tables import InvoicesBase
from meters.tables import MetersBase

ALL_METADATA: tuple[MetaData, ...] = (MetersBase.metadata, InvoicesBase.metadata, BillingBase.metadata)
