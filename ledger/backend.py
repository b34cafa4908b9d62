"""What a ledger backend does for the relay and the read endpoints (`local` and `formance`).

Transactions arrive from the outbox with a unique `reference` (the outbox id); committing the
same reference twice must never book twice: a backend answers `DUPLICATE` for a reference it
already holds with the same postings.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Posting:
    """Move `amount` minor units of `asset` (`CODE/scale`, e.g. `BTC/8`) from source to
    destination."""

    source: str
    destination: str
    amount: int
    asset: str


@dataclass(frozen=True, slots=True)
class LedgerTransaction:
    reference: str
    postings: tuple[Posting, ...]
    metadata: Mapping[str, str] = field(default_factory=dict)
    timestamp: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class AccountMetadata:
    """Metadata to set on an account (creating it if needed)."""

    address: str
    metadata: Mapping[str, str]


class CommitOutcome(enum.Enum):
    COMMITTED = "committed"
    DUPLICATE = "duplicate"  # the reference was already booked: nothing more to do


@dataclass(frozen=True, slots=True)
class CommittedTransaction:
    reference: str
    transaction_id: int
    postings: tuple[Posting, ...]
    metadata: Mapping[str, str]
    timestamp: dt.datetime


class LedgerUnavailable(Exception):
    """The backend could not be reached or failed: retry later (the outbox keeps the entry)."""


class LedgerRefused(Exception):
    """The backend refused the entry for good (invalid): retrying cannot help."""


class LedgerBackend(Protocol):
    name: str

    async def commit(self, transactions: Sequence[LedgerTransaction]
                     ) -> list[CommitOutcome]:
        """Book transactions in order (a bulk where the backend has one); one outcome each."""
        ...

    async def set_account_metadata(self, entries: Sequence[AccountMetadata]) -> None:
        """Create accounts / merge metadata (idempotent)."""
        ...

    async def balances(self, address: str) -> dict[str, int]:
        """Asset → balance in minor units of one account (empty if it never moved)."""
        ...

    async def balances_by_prefix(self, prefix: str) -> dict[str, dict[str, int]]:
        """Address → asset → balance, for every account whose address starts with `prefix`."""
        ...

    async def account(self, address: str) -> tuple[dict[str, str], dict[str, int]] | None:
        """(metadata, balances) of an account, None if the ledger does not know it."""
        ...

    async def transactions(self, *, address: str | None, reference: str | None, limit: int,
                           offset: int) -> tuple[list[CommittedTransaction], int]:
        """Newest first, optionally touching `address` or with `reference`; and the total."""
        ...

    async def check(self) -> None:
        """Raise if the backend cannot be used now."""
        ...

    async def close(self) -> None: ...
