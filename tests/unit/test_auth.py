from __future__ import annotations

import base64
import time
import uuid

import jwt
import orjson
import pytest

from dealer.auth import ISSUER, Role, mint_token, verify_token
from dealer.errors import ApiError

SECRET = "s" * 64


def _expect(errno: int, token: str) -> None:
    with pytest.raises(ApiError) as caught:
        verify_token(SECRET, token)
    assert caught.value.error.errno == errno


def test_minted_token_round_trips_with_accounts() -> None:
    account = uuid.uuid4()
    principal = verify_token(SECRET, mint_token(SECRET, Role.TRADER, accounts=[account]))
    assert principal.role is Role.TRADER
    assert principal.accounts == frozenset({account})
    assert principal.may_act_for(account)
    assert not principal.may_act_for(uuid.uuid4())


def test_admin_may_act_for_any_account() -> None:
    principal = verify_token(SECRET, mint_token(SECRET, Role.ADMIN))
    assert principal.may_act_for(uuid.uuid4())


def test_expired_token_is_refused() -> None:
    _expect(-101003, mint_token(SECRET, Role.ADMIN, ttl_seconds=1, now=time.time() - 3600))


def test_token_without_exp_is_refused() -> None:
    claims = {"iss": ISSUER, "sub": "x", "role": "admin", "iat": int(time.time())}
    _expect(-101002, jwt.encode(claims, SECRET, algorithm="HS256"))


def test_alg_none_is_refused() -> None:
    def b64(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()

    claims = {"iss": ISSUER, "sub": "x", "role": "admin", "iat": int(time.time()),
              "exp": int(time.time()) + 60}
    _expect(-101002, f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.")


def test_other_algorithms_are_refused() -> None:
    claims = {"iss": ISSUER, "sub": "x", "role": "admin", "iat": int(time.time()),
              "exp": int(time.time()) + 60}
    _expect(-101002, jwt.encode(claims, SECRET, algorithm="HS512"))


def test_wrong_secret_wrong_issuer_bad_role_and_garbage_are_refused() -> None:
    _expect(-101002, mint_token("o" * 40, Role.ADMIN))
    now = int(time.time())
    _expect(-101002, jwt.encode({"iss": "other", "sub": "x", "role": "admin", "iat": now,
                                 "exp": now + 60}, SECRET, algorithm="HS256"))
    _expect(-101002, jwt.encode({"iss": ISSUER, "sub": "x", "role": "root", "iat": now,
                                 "exp": now + 60}, SECRET, algorithm="HS256"))
    _expect(-101002, jwt.encode({"iss": ISSUER, "sub": "x", "role": "trader", "iat": now,
                                 "exp": now + 60, "accounts": ["nope"]}, SECRET,
                                algorithm="HS256"))
    _expect(-101002, "not-a-token")


def test_ttl_is_bounded() -> None:
    with pytest.raises(ValueError, match="ttl"):
        mint_token(SECRET, Role.ADMIN, ttl_seconds=0)
