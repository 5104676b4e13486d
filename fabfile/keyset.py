"""The JWT key set: how AUTH_JWT_SECRET rotates without logging anyone out.

AUTH_JWT_SECRET holds one or two keys, comma separated: the first signs (auth-service), every
one verifies (auth-service and api-service). A rotation puts a new key first and keeps the one
that signed until now, so a token issued before the rotation stays valid until it expires; the
key before that one leaves the set. Rotate it again only after the tokens' lifetime (the
services' AUTH_TOKEN_TTL, 15 minutes by default), or the users holding tokens of the key that
leaves log in again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

KEY = "AUTH_JWT_SECRET"
SEPARATOR = ","
TOKEN_LIFETIME = timedelta(seconds=900)  # the services' AUTH_TOKEN_TTL (their default)


def keys(value: str) -> list[str]:
    """The keys of a set, the signing one first."""
    return [k.strip() for k in value.split(SEPARATOR) if k.strip()]


def rotated(value: str, new: str) -> str:
    """The set after a rotation: the new key signs, the one that signed verifies."""
    return SEPARATOR.join([new, *keys(value)[:1]])


def dropped(before: str, after: str) -> list[str]:
    """The keys a rotation took out of the set (tokens they signed are refused from now)."""
    return [k for k in keys(before) if k not in keys(after)]


def too_early(value: str, since: datetime | None, now: datetime) -> datetime | None:
    """When a rotation may drop the set's previous key without refusing a live token: None
    when it may now (there is no previous key, or it stopped signing a token lifetime ago)."""
    if len(keys(value)) < 2 or since is None or now - since >= TOKEN_LIFETIME:
        return None
    return since + TOKEN_LIFETIME
