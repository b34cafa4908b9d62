"""Chart of accounts: addresses are built here, never formatted at call sites (DESIGN §7)."""

from __future__ import annotations

import re
import uuid

# Formance Ledger v2 account address syntax.
ADDRESS_PATTERN = re.compile(r"^[a-zA-Z0-9_-]+(:[a-zA-Z0-9_-]+)*$")
WORLD = "world"


class InvalidAddress(ValueError):
    """An account address that the ledger would refuse."""


def validate_address(address: str) -> str:
    """Return `address` if the ledger accepts it, else raise InvalidAddress."""
    if not ADDRESS_PATTERN.fullmatch(address):
        raise InvalidAddress(f"invalid ledger account address {address!r}")
    return address


def _segment(value: uuid.UUID) -> str:
    return str(value)


def exchange_account(trading_account_id: uuid.UUID) -> str:
    """`exchange:<tradingAccountId>`: net flow between the dealer and one LP account."""
    return validate_address(f"exchange:{_segment(trading_account_id)}")


def dealer_account(dealer_account_id: uuid.UUID) -> str:
    """`dealer:<dealerAccountId>`: the dealer's inventory and realised PnL."""
    return validate_address(f"dealer:{_segment(dealer_account_id)}")


def client_account(trading_account_id: uuid.UUID) -> str:
    """`client:<tradingAccountId>`: what a client paid and received."""
    return validate_address(f"client:{_segment(trading_account_id)}")
