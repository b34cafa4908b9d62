"""Bearer JWTs: HS256 with the daemon secret, `exp` required, roles admin/trader/viewer."""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import jwt

from dealer.errors import ApiError, Errors

ALGORITHM = "HS256"
ISSUER = "fermata-dealer"
MAX_TTL_SECONDS = 366 * 24 * 3600


class Role(enum.StrEnum):
    ADMIN = "admin"
    TRADER = "trader"
    VIEWER = "viewer"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's subject, role, and (traders) the accounts it may act for."""

    subject: str
    role: Role
    accounts: frozenset[uuid.UUID]
    # The accounts' ints, which `may_act_for` tests (every quote and accept): an int is hashed
    # and compared in C, a UUID through two Python calls.
    _account_ints: frozenset[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_account_ints", frozenset(a.int for a in self.accounts))

    def may_act_for(self, trading_account_id: uuid.UUID) -> bool:
        return self.role is Role.ADMIN or trading_account_id.int in self._account_ints


def mint_token(
    secret: str,
    role: Role,
    *,
    accounts: list[uuid.UUID] | None = None,
    ttl_seconds: int = 3600,
    subject: str | None = None,
    now: float | None = None,
) -> str:
    """A signed token; traders carry the trading accounts they may act for."""
    if ttl_seconds <= 0 or ttl_seconds > MAX_TTL_SECONDS:
        raise ValueError(f"ttl must be between 1 and {MAX_TTL_SECONDS} seconds")
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {
        "iss": ISSUER,
        "sub": subject or f"{role.value}-{uuid.uuid4().hex[:8]}",
        "role": role.value,
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    if accounts:
        claims["accounts"] = [str(a) for a in accounts]
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> Principal:
    """Decode and check a token; raises ApiError 401 for anything wrong with it."""
    return _verified(secret, token)[0]


class TokenVerifier:
    """Verifies tokens, remembering the ones that passed until they expire: a client sends the
    same token with every request, and checking its signature again each time is wasted work.
    Bounded (forgets everything past `max_entries`); failures are never remembered."""

    def __init__(self, secret: str, *, max_entries: int = 4096,
                 clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self._max_entries = max_entries
        self._clock = clock
        self._verified: dict[str, tuple[Principal, float]] = {}

    def verify(self, token: str) -> Principal:
        known = self._verified.get(token)
        if known is not None:
            principal, expires = known
            if expires > self._clock():
                return principal
            del self._verified[token]
            raise ApiError(Errors.TOKEN_EXPIRED)
        principal, expires = _verified(self._secret, token)
        if len(self._verified) >= self._max_entries:
            self._verified.clear()
        self._verified[token] = (principal, expires)
        return principal


def _verified(secret: str, token: str) -> tuple[Principal, float]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError:
        raise ApiError(Errors.INVALID_TOKEN, "Malformed access token") from None
    if header.get("alg") != ALGORITHM:
        raise ApiError(Errors.INVALID_TOKEN, f"Token algorithm must be {ALGORITHM}")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise ApiError(Errors.TOKEN_EXPIRED) from None
    except jwt.MissingRequiredClaimError as exc:
        raise ApiError(Errors.INVALID_TOKEN, f"Token lacks the {exc.claim!r} claim") from None
    except jwt.InvalidTokenError:
        raise ApiError(Errors.INVALID_TOKEN) from None
    try:
        role = Role(str(claims.get("role")))
        accounts = frozenset(uuid.UUID(str(a)) for a in claims.get("accounts", []))
    except (ValueError, TypeError):
        raise ApiError(Errors.INVALID_TOKEN,
                       "Token has an invalid role or accounts claim") from None
    return (Principal(subject=str(claims["sub"]), role=role, accounts=accounts),
            float(claims["exp"]))
