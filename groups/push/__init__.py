"""Push notifications: device tokens, per-user muted categories, senders (APNs,
FCM, log-only) and an asynchronous dispatcher with retries."""
