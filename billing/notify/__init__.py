"""Notifications: the outbox (queued in the same transaction as what they report), their signing, and their
delivery by webhook and e-mail with retries and dead letters."""
