"""The JWT key set: how AUTH_JWT_SECRET rotates without logging anyone out.

AUTH_JWT_SECRET holds one or two keys, comma separated: the first signs (auth-service), every
one verifies (auth-service and api-service). A rotation puts a new key first and keeps the one
that signed until now, so a token issued before the rotation stays valid until it expires; the
key before that one leaves the set. Rotate it again only after the tokens' lifetime (the
services' AUTH_TOKEN_TTL, 15 minutes by default), or the users holding tokens of the key that
leaves log in again.
"""

from __future__ import annotations

KEY = "AUTH_JWT_SECRET"
SEPARATOR = ","


def keys(value: str) -> list[str]:
    """The keys of a set, the signing one first."""
    return [k.strip() for k in value.split(SEPARATOR) if k.strip()]


def rotated(value: str, new: str) -> str:
    """The set after a rotation: the new key signs, the one that signed verifies."""
    return SEPARATOR.join([new, *keys(value)[:1]])


def dropped(before: str, after: str) -> list[str]:
    """The keys a rotation took out of the set (tokens they signed are refused from now)."""
    return [k for k in keys(before) if k not in keys(after)]
