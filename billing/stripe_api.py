"""The Stripe API calls Disco makes: create a customer, a Checkout session, a
customer-portal session, and cancel a subscription (account deletion).

Uses the stripe package's ``StripeClient`` (no global ``stripe.api_key``), with
its async methods (httpx underneath), so a slow Stripe never blocks the event
loop. ``api_base`` replaces https://api.stripe.com, which is how tests point it
at a local stand-in; Stripe's own client retries connection errors and 5xx
with idempotency keys, so we only set how many times.
"""

from __future__ import annotations

import logging
from typing import Any

import stripe
from stripe._base_address import BaseAddresses

from billing.errors import StripeFailed

logger = logging.getLogger(__name__)

STRIPE_NETWORK_RETRIES = 2


class StripeGateway:
    def __init__(self, api_key: str, api_base: str | None = None,
                 max_network_retries: int = STRIPE_NETWORK_RETRIES) -> None:
        base: BaseAddresses = {}
        if api_base:
            base["api"] = api_base.rstrip("/")
        self._client = stripe.StripeClient(
            api_key, base_addresses=base, max_network_retries=max_network_retries
        )

    async def create_customer(self, user_id: int, username: str) -> str:
        """A Stripe customer for a Disco user; the idempotency key makes retries and
        concurrent first checkouts end with one customer, not two."""
        params: Any = {"name": username, "metadata": {"user_id": str(user_id)}}
        try:
            customer = await self._client.v1.customers.create_async(
                params=params, options={"idempotency_key": f"disco-customer-{user_id}"}
            )
        except stripe.StripeError as exc:
            raise _failed("create a customer", exc) from exc
        return str(customer.id)

    async def create_checkout_session(
        self, *, customer_id: str, price_id: str, user_id: int, plan: str,
        success_url: str, cancel_url: str,
    ) -> str:
        """A subscription-mode Checkout session; returns the URL to send the user to.

        ``client_reference_id`` and the metadata let the webhook find the user
        even before it knows the customer id.
        """
        meta = {"user_id": str(user_id), "plan": plan}
        params: Any = {
            "mode": "subscription",
            "customer": customer_id,
            "client_reference_id": str(user_id),
            "line_items": [{"price": price_id, "quantity": 1}],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "metadata": meta,
            "subscription_data": {"metadata": meta},
        }
        try:
            session = await self._client.v1.checkout.sessions.create_async(params=params)
        except stripe.StripeError as exc:
            raise _failed("start a checkout", exc) from exc
        if not session.url:
            raise StripeFailed("Stripe returned a checkout session without a URL")
        return str(session.url)

    async def create_portal_session(self, *, customer_id: str, return_url: str) -> str:
        params: Any = {"customer": customer_id, "return_url": return_url}
        try:
            session = await self._client.v1.billing_portal.sessions.create_async(params=params)
        except stripe.StripeError as exc:
            raise _failed("open the billing portal", exc) from exc
        return str(session.url)


    async def cancel_subscription(self, subscription_id: str) -> str:
        """Cancel at once (no proration); returns Stripe's status for it.

        An id Stripe no longer knows (already gone) counts as cancelled.
        """
        try:
            sub = await self._client.v1.subscriptions.cancel_async(subscription_id)
        except stripe.InvalidRequestError as exc:
            if getattr(exc, "http_status", None) == 404:
                return "canceled"
            raise _failed("cancel the subscription", exc) from exc
        except stripe.StripeError as exc:
            raise _failed("cancel the subscription", exc) from exc
        return str(sub.status)


def _failed(what: str, exc: stripe.StripeError) -> StripeFailed:
    message = getattr(exc, "user_message", None) or str(exc) or type(exc).__name__
    logger.warning("stripe: could not %s: %s (request %s)", what, message,
                   getattr(exc, "request_id", None))
    return StripeFailed(f"could not {what} with Stripe: {message}")
