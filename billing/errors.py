"""Billing errors.

Each one is also a ``common.errors`` class, so the edge's one table
(``signaling.edge_errors``) maps it to an HTTP status without knowing billing.

Hierarchy::

    BillingError                          base for everything raised by billing/
    ├── UnknownPlan          (BadRequest)   no plan by that name in the catalog
    ├── InvalidWebhook       (BadRequest)   bad/missing signature, stale, not JSON,
    │                                       not shaped like a Stripe event
    ├── AlreadySubscribed    (Conflict)     checkout for a plan you already pay for
    ├── NoBillingAccount     (NotFound)     portal before any checkout
    ├── BillingNotConfigured (Unavailable)  no Stripe key / secret / price id
    ├── StripeFailed         (Unavailable)  Stripe's API answered with an error
    └── PlansFileError       (ValueError)   the plans file is unreadable or wrong;
                                            raised at start-up, never at a request
"""

from __future__ import annotations

from common.errors import BadRequest, Conflict, DiscoError, NotFound, Unavailable


class BillingError(DiscoError):
    """Base class; deliberately has no ``code`` so the common parent's code wins."""


class UnknownPlan(BillingError, BadRequest):
    pass


class InvalidWebhook(BillingError, BadRequest):
    pass


class AlreadySubscribed(BillingError, Conflict):
    pass


class NoBillingAccount(BillingError, NotFound):
    pass


class BillingNotConfigured(BillingError, Unavailable):
    pass


class StripeFailed(BillingError, Unavailable):
    pass


class PlansFileError(BillingError, ValueError):
    pass
