from __future__ import annotations

import base64
import time
import uuid

import jwt
import orjson
import pytest

from dealer.auth import ISSUER, Role, TokenVerifier, mint_token, verify_token
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


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_verifier_remembers_a_good_token_until_it_expires() -> None:
    clock = _Clock(time.time())
    verifier = TokenVerifier(SECRET, clock=clock)
    token = mint_token(SECRET, Role.VIEWER, ttl_seconds=60, now=clock.now)
    first = verifier.verify(token)
    assert verifier.verify(token) is first  # remembered, not decoded again
    clock.now += 61  # past `exp`: refused although it passed before
    with pytest.raises(ApiError) as caught:
        verifier.verify(token)
    assert caught.value.error.code == "TOKEN_EXPIRED"


def test_verifier_never_remembers_a_refusal_and_stays_bounded() -> None:
    verifier = TokenVerifier(SECRET, max_entries=3)
    forged = mint_token("another-secret-" + "x" * 40, Role.ADMIN)
    for _ in range(2):
        with pytest.raises(ApiError):
            verifier.verify(forged)
    tokens = [mint_token(SECRET, Role.VIEWER, subject=f"viewer-{n}") for n in range(10)]
    assert [verifier.verify(t).subject for t in tokens] == [f"viewer-{n}" for n in range(10)]
    assert len(verifier._verified) <= 3
