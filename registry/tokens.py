"""Bearer tokens of the HTTP API, kept as hashes.

    token, record = reg.tokens.create(scope="write", name="ci")   # the secret, shown once
    reg.tokens.verify(token)                                       # its record, or None
    reg.tokens.revoke(record.id)

A token is `ct_` and 32 random bytes in URL-safe base64. Only its sha256 is stored: a leaked
database gives no usable token. A read token may read; a write token may also upload data and
queue arrivals. A revoked token stays listed (with when it was revoked) and is never accepted.
"""

from __future__ import annotations

import hashlib
import secrets

from registry.records import TokenRecord
from registry.uow import Database
from tasks.errors import ConfigError
from tasks.spec import check_name

SCOPES = ("read", "write")
PREFIX = "ct_"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenStore:
    """Tokens of one registry."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, *, scope: str, name: str | None = None) -> tuple[str, TokenRecord]:
        """A new token of `scope`: (the secret, to show once; its record)."""
        if scope not in SCOPES:
            raise ConfigError(f"--scope must be read or write, got {scope!r}")
        name = check_name(name) if name else f"{scope}-token"
        secret = PREFIX + secrets.token_urlsafe(32)
        token_id = self.db.write(
            lambda uow: uow.tokens.add(name=name, scope=scope, sha256=digest(secret))
        )
        return secret, self.get(token_id)

    def get(self, token_id: int) -> TokenRecord:
        for t in self.list():
            if t.id == token_id:
                return t
        raise ConfigError(f"token {token_id} is not in the registry; `continual tokens list`")

    def list(self) -> list[TokenRecord]:
        return self.db.read(lambda uow: uow.tokens.all())

    def active(self) -> int:
        """How many tokens are not revoked (none: the server has no authentication to ask)."""
        return self.db.read(lambda uow: uow.tokens.active())

    def revoke(self, token_id: int) -> TokenRecord:
        found = self.get(token_id)
        if found.revoked_at is not None:
            raise ConfigError(f"token {token_id} ({found.name}) was already revoked")
        self.db.write(lambda uow: uow.tokens.revoke(token_id))
        return self.get(token_id)

    def verify(self, token: str) -> TokenRecord | None:
        """The live token `token` is, or None (unknown or revoked)."""
        if not token.startswith(PREFIX):
            return None
        found = self.db.read(lambda uow: uow.tokens.by_hash(digest(token)))
        return None if found is None or found.revoked_at is not None else found
