"""The errno registry: every error the API can answer, with its HTTP status and message.

Errnos are stable; they are listed in the OpenAPI document and the README. Ranges:
-100xxx request, -101xxx auth, -110xxx credentials, -120xxx trading accounts,
-130xxx FERMATA dealers, clients and links (seeds/002 fixes -130007), -140xxx market data,
-150xxx ledger, -160xxx RFQ, -170xxx hedging.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """One registered error: its errno, HTTP status, machine code and default message."""

    errno: int
    status: int
    code: str
    message: str


class Errors:
    """The registry. Attribute names are the machine codes carried in `details.code`."""

    INTERNAL = ErrorCode(-1, 500, "INTERNAL", "Internal error")
    SERVICE_UNAVAILABLE = ErrorCode(
        -2, 503, "SERVICE_UNAVAILABLE", "The database is unavailable; retry later"
    )

    INVALID_REQUEST = ErrorCode(-100001, 400, "INVALID_REQUEST", "Invalid request")
    MALFORMED_JSON = ErrorCode(-100002, 400, "MALFORMED_JSON", "Request body is not valid JSON")
    PAYLOAD_TOO_LARGE = ErrorCode(-100003, 413, "PAYLOAD_TOO_LARGE", "Request body is too large")
    ROUTE_NOT_FOUND = ErrorCode(-100004, 404, "ROUTE_NOT_FOUND", "No such endpoint")
    METHOD_NOT_ALLOWED = ErrorCode(-100005, 405, "METHOD_NOT_ALLOWED", "Method not allowed")

    UNAUTHENTICATED = ErrorCode(-101001, 401, "UNAUTHENTICATED", "Bearer token required")
    INVALID_TOKEN = ErrorCode(-101002, 401, "INVALID_TOKEN", "Invalid access token")
    TOKEN_EXPIRED = ErrorCode(-101003, 401, "TOKEN_EXPIRED", "Access token has expired")
    FORBIDDEN = ErrorCode(-101004, 403, "FORBIDDEN", "Insufficient role for this action")

    CREDENTIAL_NOT_FOUND = ErrorCode(-110001, 404, "CREDENTIAL_NOT_FOUND", "Credential not found")
    CREDENTIAL_REVOKED = ErrorCode(-110002, 400, "CREDENTIAL_REVOKED", "Credential is revoked")
    CREDENTIAL_NOT_VERIFIED = ErrorCode(
        -110003, 400, "CREDENTIAL_NOT_VERIFIED", "Credential is not verified; verify it first"
    )
    CREDENTIAL_VERIFICATION_FAILED = ErrorCode(
        -110004, 400, "CREDENTIAL_VERIFICATION_FAILED", "Credential verification failed"
    )
    CREDENTIAL_VENUE_MISMATCH = ErrorCode(
        -110005, 400, "CREDENTIAL_VENUE_MISMATCH", "Credentials belong to different venues"
    )

    TRADING_ACCOUNT_NOT_FOUND = ErrorCode(
        -120001, 404, "TRADING_ACCOUNT_NOT_FOUND", "Trading account not found"
    )
    TRADING_ACCOUNT_ALREADY_CONNECTED = ErrorCode(
        -120002, 409, "TRADING_ACCOUNT_ALREADY_CONNECTED", "Trading account already connected"
    )
    EXTERNAL_ACCOUNT_UNKNOWN = ErrorCode(
        -120003, 422, "EXTERNAL_ACCOUNT_UNKNOWN", "Invalid external trading account ID"
    )
    TRADING_ACCOUNT_DISCONNECTED = ErrorCode(
        -120004, 400, "TRADING_ACCOUNT_DISCONNECTED", "Trading account is disconnected"
    )
    TRADING_ACCOUNT_LINKED = ErrorCode(
        -120005, 400, "TRADING_ACCOUNT_LINKED",
        "Trading account is linked to a dealer; unlink it first",
    )
    TRADING_ACCOUNT_NOT_EXCHANGE = ErrorCode(
        -120006, 400, "TRADING_ACCOUNT_NOT_EXCHANGE",
        "Operation applies to exchange trading accounts only",
    )

    DEALER_NOT_FOUND = ErrorCode(-130001, 404, "DEALER_NOT_FOUND", "Dealer not found")
    NOT_EXCHANGE_ACCOUNT = ErrorCode(
        -130003, 400, "NOT_EXCHANGE_ACCOUNT", "Trading account is not an exchange account"
    )
    ACCOUNT_NOT_ACTIVE = ErrorCode(
        -130004, 400, "ACCOUNT_NOT_ACTIVE", "Trading account is not ACTIVE"
    )
    NOT_LINKED = ErrorCode(
        -130005, 404, "NOT_LINKED", "Trading account is not linked to this dealer"
    )
    LINKED_TO_OTHER_DEALER = ErrorCode(
        -130006, 400, "LINKED_TO_OTHER_DEALER", "Trading account is linked to another dealer"
    )
    ALREADY_LINKED = ErrorCode(
        -130007, 400, "ALREADY_LINKED", "Trading account is already linked to this dealer"
    )
    INVALID_DEALER_CONFIG = ErrorCode(
        -130008, 400, "INVALID_DEALER_CONFIG", "Invalid dealer configuration"
    )
    LP_ORDERS_IN_FLIGHT = ErrorCode(
        -130010, 409, "LP_ORDERS_IN_FLIGHT",
        "The LP has hedge orders in flight; unlink with drain: true, or once they finish",
    )

    UNKNOWN_SYMBOLS = ErrorCode(
        -140001, 400, "UNKNOWN_SYMBOLS", "The venue does not list these symbols"
    )
    INSTRUMENT_NOT_FOUND = ErrorCode(-140002, 404, "INSTRUMENT_NOT_FOUND", "Instrument not found")
    VENUE_UNAVAILABLE = ErrorCode(
        -140003, 502, "VENUE_UNAVAILABLE", "The venue could not be reached; retry later"
    )
    ORDER_BOOK_UNAVAILABLE = ErrorCode(
        -140004, 503, "ORDER_BOOK_UNAVAILABLE", "No fresh order book for this instrument"
    )
    INVALID_INSTRUMENT_ID = ErrorCode(
        -140005, 400, "INVALID_INSTRUMENT_ID",
        "Give instrumentId ({VENUE}:{BASE}/{QUOTE}) or venue and symbol",
    )
    SYMBOL_NOT_QUOTED = ErrorCode(
        -130009, 400, "SYMBOL_NOT_QUOTED", "The dealer does not quote this symbol"
    )

    INVALID_LEDGER_ADDRESS = ErrorCode(
        -150001, 400, "INVALID_LEDGER_ADDRESS", "Invalid ledger account address"
    )
    LEDGER_ACCOUNT_NOT_FOUND = ErrorCode(
        -150002, 404, "LEDGER_ACCOUNT_NOT_FOUND", "The ledger has no such account"
    )
    LEDGER_UNAVAILABLE = ErrorCode(
        -150003, 502, "LEDGER_UNAVAILABLE", "The ledger could not be reached; retry later"
    )

    ACCOUNT_FORBIDDEN = ErrorCode(
        -101005, 403, "ACCOUNT_FORBIDDEN", "Token may not act for this trading account"
    )
    CLIENT_NOT_FOUND = ErrorCode(-130002, 404, "CLIENT_NOT_FOUND", "Client account not found")
    QUOTE_NOT_FOUND = ErrorCode(-160001, 404, "QUOTE_NOT_FOUND", "Quote not found")
    QUOTE_EXPIRED = ErrorCode(-160002, 400, "QUOTE_EXPIRED", "Quote has expired")
    QUOTE_ALREADY_FILLED = ErrorCode(
        -160003, 409, "QUOTE_ALREADY_FILLED", "Quote was already accepted"
    )
    QUOTE_MISMATCH = ErrorCode(
        -160004, 400, "QUOTE_MISMATCH", "Order does not match the quote (side, quantity or "
        "instrument)"
    )
    QUOTE_FOREIGN_CLIENT = ErrorCode(
        -160005, 403, "QUOTE_FOREIGN_CLIENT", "The quote was made for another client"
    )
    NO_LINKED_LP = ErrorCode(-160006, 400, "NO_LINKED_LP", "The dealer has no linked LP")
    DEALER_PAUSED = ErrorCode(-160007, 400, "DEALER_PAUSED", "The dealer is paused")
    BOOKS_STALE = ErrorCode(
        -160008, 503, "BOOKS_STALE", "No fresh LP book for this symbol; retry shortly"
    )
    INSUFFICIENT_DEPTH = ErrorCode(
        -160009, 400, "INSUFFICIENT_DEPTH", "Not enough depth on the linked LPs"
    )
    SIZE_OUT_OF_LIMITS = ErrorCode(
        -160010, 400, "SIZE_OUT_OF_LIMITS", "Size outside the instrument's or dealer's limits"
    )
    EXPOSURE_LIMIT = ErrorCode(
        -160011, 400, "EXPOSURE_LIMIT", "The dealer's unhedged exposure limit is reached"
    )
    UNSUPPORTED_ORDER_TYPE = ErrorCode(
        -160012, 400, "UNSUPPORTED_ORDER_TYPE", "Only QUOTED orders (with a quoteId) are accepted"
    )
    IDEMPOTENCY_CONFLICT = ErrorCode(
        -160013, 409, "IDEMPOTENCY_CONFLICT",
        "idempotencyKey or clientOrderId already used for another order",
    )

    HEDGE_JOB_NOT_FOUND = ErrorCode(-170001, 404, "HEDGE_JOB_NOT_FOUND", "Hedge job not found")
    HEDGE_JOB_NOT_FAILED = ErrorCode(
        -170002, 409, "HEDGE_JOB_NOT_FAILED", "Only a FAILED hedge job can be retried"
    )
    HEDGE_JOB_NOT_CANCELLABLE = ErrorCode(
        -170003, 409, "HEDGE_JOB_NOT_CANCELLABLE",
        "Only a PENDING or FAILED hedge job can be cancelled",
    )
    HEDGE_JOB_CLAIMED = ErrorCode(
        -170004, 409, "HEDGE_JOB_CLAIMED",
        "A hedge worker is working this job now; retry when its claim is released",
    )
    HEDGE_ORDERS_IN_FLIGHT = ErrorCode(
        -170005, 409, "HEDGE_ORDERS_IN_FLIGHT",
        "The hedge job has orders whose outcome is not known yet (SENT or UNKNOWN)",
    )

    @classmethod
    def all(cls) -> list[ErrorCode]:
        """Every registered error, ordered by errno descending (0 side first)."""
        codes = [v for v in vars(cls).values() if isinstance(v, ErrorCode)]
        return sorted(codes, key=lambda c: -c.errno)


@dataclass(slots=True)
class ApiError(Exception):
    """Raised by services and handlers; `dealer.middlewares.answer` turns it into the envelope."""

    error: ErrorCode
    message: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message or self.error.message


def check_registry_unique() -> None:
    """Fail loudly if two codes share an errno (checked by the test suite)."""
    seen: dict[int, str] = {}
    for code in Errors.all():
        if code.errno in seen:
            raise AssertionError(f"errno {code.errno} used by {seen[code.errno]} and {code.code}")
        seen[code.errno] = code.code


def invalid_fields(problems: list[tuple[str, str]], kind: str = "value_error") -> ApiError:
    """-100001 naming each (field, what is wrong): the shape of a validation error's details,
    for rules over several fields that no single field's validation can name."""
    summary = "; ".join(f"{name}: {message}" for name, message in problems)
    return ApiError(Errors.INVALID_REQUEST, f"Invalid request: {summary}", {"fields": [
        {"field": name, "message": message, "type": kind} for name, message in problems]})
