"""Credential secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) with the daemon's key."""

from __future__ import annotations

from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken

_KEY_CHECK_PLAINTEXT = b"fermata-dealer secrets key check"


class SecretKeyMismatch(Exception):
    """The configured key is not the one the stored secrets were encrypted with."""


class SecretBox:
    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode("ascii"))

    def __repr__(self) -> str:
        return "SecretBox(<redacted>)"

    def seal(self, secret: dict[str, Any]) -> bytes:
        return self._fernet.encrypt(orjson.dumps(secret))

    def open(self, token: bytes) -> dict[str, Any]:
        try:
            value: dict[str, Any] = orjson.loads(self._fernet.decrypt(token))
        except InvalidToken:
            raise SecretKeyMismatch("stored secret cannot be decrypted with this key") from None
        return value

    def key_check(self) -> str:
        """A token stored once, so a later start with another key is refused."""
        return self._fernet.encrypt(_KEY_CHECK_PLAINTEXT).decode("ascii")

    def verify_key_check(self, token: str) -> None:
        try:
            ok = self._fernet.decrypt(token.encode("ascii")) == _KEY_CHECK_PLAINTEXT
        except InvalidToken:
            ok = False
        if not ok:
            raise SecretKeyMismatch(
                "DEALER_SECRETS_KEY is not the key the stored credentials were encrypted with"
            )
