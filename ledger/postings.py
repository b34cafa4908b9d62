"""Posting builders for client and hedge fills, and the checks run on a batch before writing.

Pure: no I/O, no clock (a fill's time is passed in). The shapes follow DESIGN §7:

- client BUY of q BASE at p:  `client:c → dealer:d` q·p QUOTE;  `dealer:d → client:c` q BASE
- hedge BUY on LP e of q at p: `exchange:e → dealer:d` q BASE;  `dealer:d → exchange:e` q·p QUOTE
- a hedge fee f:               `dealer:d → exchange:e` f FEE, in its own transaction, kind=fee
- sells mirror the buys.

Rounding: base quantities are booked EXACT (they are lot-rounded upstream; a quantity the
ledger's scale cannot hold is a configuration error and is refused, never trimmed). Quote
amounts and fees are rounded in the dealer's favour: DOWN when the dealer pays, UP when it
receives (`minor_paid_by_dealer` / `minor_received_by_dealer`). A client fill whose quote leg
rounds to nothing is refused (the client would get nothing for its base); a hedge fill's quote
leg under one minor unit that the dealer pays books no quote posting, since the venue made the
fill and its base must be booked: what it rounded off is kept like any other rounding
(`rounding_kept`).
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from decimal import MAX_EMAX, MIN_EMIN, Decimal, Inexact, localcontext
from typing import Final

from ledger.accounts import (
    WORLD,
    InvalidAddress,
    client_account,
    dealer_account,
    exchange_account,
    validate_address,
)
from ledger.assets import (
    Asset,
    InvalidAsset,
    Rounding,
    ScaleTable,
    UnknownAsset,
    finite_decimal,
    from_minor,
    minor_paid_by_dealer,
    minor_received_by_dealer,
    to_minor,
)
from ledger.backend import LedgerTransaction, Posting

BUY: Final = "BUY"
SELL: Final = "SELL"
FEE_REFERENCE_SUFFIX: Final = ":fee"


class EntryKind(enum.StrEnum):
    """The `kind` metadata of every transaction the dealer books."""

    CLIENT_FILL = "client_fill"
    HEDGE_FILL = "hedge_fill"
    FEE = "fee"


class InvalidFill(ValueError):
    """Fill data a builder cannot turn into postings."""


class InvalidBatch(ValueError):
    """A batch of transactions that must not be written; `problems` lists every reason."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        listed = "\n".join(f"- {problem}" for problem in self.problems)
        super().__init__(f"ledger batch refused, {len(self.problems)} problem(s):\n{listed}")


def client_fill(client_id: uuid.UUID, dealer_id: uuid.UUID, side: str, base: Asset,
                quote: Asset, quantity: Decimal, price: Decimal, *, reference: str,
                metadata: Mapping[str, str], quote_amount: Decimal | None = None,
                timestamp: dt.datetime | None = None) -> LedgerTransaction:
    """The transaction of a client fill; `side` is the client's side, `BUY` or `SELL`.

    The quote leg books what the client agreed: `quote_amount` (the quote's quoteQuantity)
    when given, else quantity * price, rounded in the dealer's favour (UP when the client buys
    and pays it, DOWN when the client sells and the dealer pays it). Metadata gets
    `kind=client_fill`, `clientSide` and `price` next to the caller's ids (quoteId, …).
    """
    client_side = _side(side)
    _check_reference(reference)
    base_units, quote_units = _trade_units(
        dealer_buys_base=client_side == SELL, base=base, quote=quote, quantity=quantity,
        price=price, quote_amount=quote_amount, refuse_zero_quote=True)
    client, dealer = client_account(client_id), dealer_account(dealer_id)
    if client_side == BUY:
        postings = (Posting(client, dealer, quote_units, str(quote)),
                    Posting(dealer, client, base_units, str(base)))
    else:
        postings = (Posting(dealer, client, quote_units, str(quote)),
                    Posting(client, dealer, base_units, str(base)))
    return LedgerTransaction(
        reference=reference, postings=postings, timestamp=_aware(timestamp),
        metadata=_metadata(metadata, kind=EntryKind.CLIENT_FILL, clientSide=client_side,
                           price=_plain(price)))


def hedge_fill(exchange_id: uuid.UUID, dealer_id: uuid.UUID, side: str, base: Asset,
               quote: Asset, quantity: Decimal, price: Decimal,
               fee: tuple[Asset, Decimal] | None, *, reference: str,
               metadata: Mapping[str, str], quote_amount: Decimal | None = None,
               timestamp: dt.datetime | None = None) -> tuple[LedgerTransaction, ...]:
    """The transactions of a hedge fill on LP account `exchange_id`; `side` is the dealer's side.

    Returns the fill (`kind=hedge_fill`, `dealerSide`, `price`) and, when the fee is not zero
    in minor units, a second transaction `reference + ":fee"` with the single posting
    `dealer:d → exchange:e` in the fee asset (`kind=fee`, `fillReference`) — whatever the fee
    asset, base included. Both carry the caller's ids (orderId, jobId, …) and must be written
    together. `quote_amount` is the venue's executed quote amount when it reports one (else
    quantity * price); it and the fee are rounded in the dealer's favour.

    A BUY whose quote amount is under one minor unit (a coarse quote scale, a partial fill of
    a lot or two) books its base leg alone: the venue filled it, so the base moved and must be
    in the ledger, while the quote rounds down to nothing, as every amount the dealer pays
    rounds down. `rounding_kept` counts that amount like any other rounding, so
    reconciliation explains it. A SELL's quote leg, rounded up, is always one unit or more.
    """
    dealer_side = _side(side)
    _check_reference(reference)
    base_units, quote_units = _trade_units(
        dealer_buys_base=dealer_side == BUY, base=base, quote=quote, quantity=quantity,
        price=price, quote_amount=quote_amount, refuse_zero_quote=False)
    exchange, dealer = exchange_account(exchange_id), dealer_account(dealer_id)
    if dealer_side == BUY:
        legs = (Posting(exchange, dealer, base_units, str(base)),
                Posting(dealer, exchange, quote_units, str(quote)))
    else:
        legs = (Posting(dealer, exchange, base_units, str(base)),
                Posting(exchange, dealer, quote_units, str(quote)))
    timestamp = _aware(timestamp)
    fill = LedgerTransaction(
        reference=reference, postings=tuple(leg for leg in legs if leg.amount > 0),
        timestamp=timestamp,
        metadata=_metadata(metadata, kind=EntryKind.HEDGE_FILL, dealerSide=dealer_side,
                           price=_plain(price)))
    fee_units = _fee_units(fee)
    if fee is None or fee_units == 0:
        return (fill,)
    fee_asset = fee[0]
    fee_entry = LedgerTransaction(
        reference=reference + FEE_REFERENCE_SUFFIX,
        postings=(Posting(dealer, exchange, fee_units, str(fee_asset)),),
        timestamp=timestamp,
        metadata=_metadata(metadata, kind=EntryKind.FEE, fillReference=reference))
    return (fill, fee_entry)


def other_fee(exchange_id: uuid.UUID, dealer_id: uuid.UUID, fee: tuple[Asset, Decimal], *,
              fill_reference: str, metadata: Mapping[str, str],
              timestamp: dt.datetime | None = None) -> LedgerTransaction | None:
    """A hedge fill's fee in another asset than the one `hedge_fill` booked (a venue may charge
    one order in two): `fill_reference + ":fee:" + CODE`, the single posting
    `dealer:d → exchange:e` rounded in the dealer's favour; None when that is 0 minor units."""
    _check_reference(fill_reference)
    units = _fee_units(fee)
    if units == 0:
        return None
    return LedgerTransaction(
        reference=f"{fill_reference}{FEE_REFERENCE_SUFFIX}:{fee[0].code}",
        postings=(Posting(dealer_account(dealer_id), exchange_account(exchange_id), units,
                          str(fee[0])),),
        timestamp=_aware(timestamp),
        metadata=_metadata(metadata, kind=EntryKind.FEE, fillReference=fill_reference))


def hedge_fill_venue_moves(side: str, base: Asset, quote: Asset, quantity: Decimal,
                           price: Decimal, fees: Mapping[str, Decimal], *,
                           quote_amount: Decimal | None = None) -> dict[str, Decimal]:
    """What a hedge fill moved on the LP's venue balances, exactly, by asset code (`side` is
    the dealer's): a BUY gets the base and pays the notional, a SELL the reverse, and every fee
    is paid. The notional is `quote_amount` when given, else quantity * price, as `hedge_fill`
    books it."""
    dealer_side = _side(side)
    quantity = _positive(quantity, "quantity")
    notional = (_exact_product(quantity, _positive(price, "price")) if quote_amount is None
                else _positive(quote_amount, "quote amount"))
    sign = 1 if dealer_side == BUY else -1
    moves = {base.code: sign * quantity, quote.code: -sign * notional}
    for code, amount in fees.items():
        moves[code] = moves.get(code, Decimal(0)) - finite_decimal(amount, "fee")
    return moves


def rounding_kept(transactions: Iterable[LedgerTransaction], exchange_id: uuid.UUID,
                  venue_moves: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """By asset code, what the venue's balances of LP `exchange_id` moved (`venue_moves`,
    exact) plus what `transactions` booked on its `exchange:` wallet: DESIGN §7 has venue
    change = -wallet flow, so what is left is the rounding the bookings kept (no entry when
    none). Reconciliation expects exactly the sum of these, not a tolerance."""
    left = dict(venue_moves)
    address = exchange_account(exchange_id)
    for notation, units in net_by_account(transactions).get(address, {}).items():
        asset = Asset.parse(notation)
        left[asset.code] = left.get(asset.code, Decimal(0)) + from_minor(units, asset)
    return {code: amount for code, amount in left.items() if amount != 0}


def validate_batch(transactions: Sequence[LedgerTransaction], *,
                   known_assets: ScaleTable | None = None, allow_world: bool = False) -> None:
    """Raise InvalidBatch listing every problem of the batch; return if it may be written.

    Checks references (non-empty, unique in the batch), `kind` metadata and string values,
    aware timestamps, and each posting: a positive int amount, valid and distinct addresses,
    no `world` (the dealer's books never create money) unless `allow_world`, and an asset in
    `CODE/scale` notation, one scale per code, known to `known_assets` when given. That each
    asset sums to zero over all accounts needs no check: every posting moves an amount from one
    account to another (`net_by_account` shows it).
    """
    problems: list[str] = []
    first_index_of_reference: dict[str, int] = {}
    first_scale_of_code: dict[str, Asset] = {}
    for index, transaction in enumerate(transactions):
        where = f"transaction {index} ({transaction.reference!r})"
        reference = transaction.reference
        if not isinstance(reference, str) or not reference.strip():
            problems.append(f"{where}: the reference must be a non-empty string")
        elif reference in first_index_of_reference:
            problems.append(f"{where}: duplicate reference, already used by transaction"
                            f" {first_index_of_reference[reference]}")
        else:
            first_index_of_reference[reference] = index
        problems.extend(f"{where}: {problem}"
                        for problem in _metadata_problems(transaction.metadata))
        if transaction.timestamp is not None and transaction.timestamp.utcoffset() is None:
            problems.append(f"{where}: the timestamp must be timezone-aware")
        if not transaction.postings:
            problems.append(f"{where}: no postings")
        for posting_index, posting in enumerate(transaction.postings):
            problems.extend(
                f"{where} posting {posting_index}: {problem}"
                for problem in _posting_problems(posting, known_assets, allow_world,
                                                 first_scale_of_code))
    if problems:
        raise InvalidBatch(problems)


def net_by_account(transactions: Iterable[LedgerTransaction]) -> dict[str, dict[str, int]]:
    """Address → asset → net minor units moved (inflows positive, outflows negative).

    An account that moved an asset and came back to zero keeps its `0` entry.
    """
    net: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
    for transaction in transactions:
        for posting in transaction.postings:
            net[posting.source][posting.asset] -= posting.amount
            net[posting.destination][posting.asset] += posting.amount
    return {address: dict(by_asset) for address, by_asset in net.items()}


def _side(side: str) -> str:
    # A StrEnum such as venues.base.Side compares equal to its value; keep the plain string.
    if side == BUY:
        return BUY
    if side == SELL:
        return SELL
    raise InvalidFill(f"side must be 'BUY' or 'SELL', got {side!r}")


def _check_reference(reference: str) -> None:
    if not isinstance(reference, str) or not reference.strip():
        raise InvalidFill(f"reference must be a non-empty string, got {reference!r}")


def _positive(value: Decimal, what: str) -> Decimal:
    if finite_decimal(value, what) <= 0:
        raise InvalidFill(f"{what} must be positive, got {value}")
    return value


def _trade_units(*, dealer_buys_base: bool, base: Asset, quote: Asset, quantity: Decimal,
                 price: Decimal, quote_amount: Decimal | None,
                 refuse_zero_quote: bool) -> tuple[int, int]:
    """Minor units of the base and quote legs of a trade, seen from the dealer. Under one minor
    unit paid by the dealer, the quote leg is refused or, without `refuse_zero_quote`, 0."""
    if base.code == quote.code:
        raise InvalidFill(f"base and quote are the same asset {base.code}")
    quantity = _positive(quantity, "quantity")
    price = _positive(price, "price")
    notional = (_exact_product(quantity, price) if quote_amount is None
                else _positive(quote_amount, "quote amount"))
    base_units = to_minor(quantity, base, Rounding.EXACT)
    quote_units = (minor_paid_by_dealer(notional, quote) if dealer_buys_base
                   else minor_received_by_dealer(notional, quote))
    if quote_units == 0 and refuse_zero_quote:
        raise InvalidFill(f"the quote leg {notional} {quote.code} rounds to zero {quote} minor"
                          " units: the fill is too small to book")
    return base_units, quote_units


def _exact_product(quantity: Decimal, price: Decimal) -> Decimal:
    # The default context keeps 28 digits; the digits of an exact product are at most the sum
    # of both operands' digits, and Inexact is trapped so a lost digit can never pass silently.
    with localcontext() as context:
        context.prec = len(quantity.as_tuple().digits) + len(price.as_tuple().digits)
        context.Emax, context.Emin = MAX_EMAX, MIN_EMIN
        context.traps[Inexact] = True
        return quantity * price


def _fee_units(fee: tuple[Asset, Decimal] | None) -> int:
    if fee is None:
        return 0
    fee_asset, fee_amount = fee
    if not isinstance(fee_asset, Asset):
        raise InvalidFill(f"the fee asset must be an Asset, got {fee_asset!r}")
    if finite_decimal(fee_amount, "fee") < 0:
        raise InvalidFill(f"fee must not be negative, got {fee_amount} {fee_asset.code}:"
                          " rebates are not booked by hedge_fill")
    return minor_paid_by_dealer(fee_amount, fee_asset)


def _metadata(given: Mapping[str, str], **builder_keys: str) -> dict[str, str]:
    problems = _metadata_problems(given, require_kind=False)
    problems += [f"metadata key {key!r} is set by the builder" for key in given
                 if key in builder_keys]
    if problems:
        raise InvalidFill("; ".join(problems))
    # str(): EntryKind members become the plain strings a ledger stores.
    return {**given, **{key: str(value) for key, value in builder_keys.items()}}


def _metadata_problems(metadata: Mapping[str, str], *, require_kind: bool = True) -> list[str]:
    if not isinstance(metadata, Mapping):
        return [f"metadata must be a mapping of strings, got {type(metadata).__name__}"]
    problems = [f"metadata {key!r}: keys and values must be strings, got {value!r}"
                for key, value in metadata.items()
                if not isinstance(key, str) or not key or not isinstance(value, str)]
    if require_kind and not metadata.get("kind"):
        problems.append("metadata has no 'kind'")
    return problems


def _posting_problems(posting: Posting, known_assets: ScaleTable | None, allow_world: bool,
                      first_scale_of_code: dict[str, Asset]) -> list[str]:
    problems: list[str] = []
    amount = posting.amount
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        problems.append(f"amount must be a positive int of minor units, got {amount!r}")
    for role, address in (("source", posting.source), ("destination", posting.destination)):
        try:
            validate_address(address)
        except (InvalidAddress, TypeError) as error:
            problems.append(f"{role}: {error}")
            continue
        if address == WORLD and not allow_world:
            problems.append(f"{role} is {WORLD!r}: the dealer's books move money between"
                            " accounts and never create or destroy it")
    if posting.source == posting.destination:
        problems.append(f"source and destination are the same account {posting.source!r}")
    try:
        asset = Asset.parse(posting.asset)
    except InvalidAsset as error:
        problems.append(str(error))
        return problems
    first = first_scale_of_code.setdefault(asset.code, asset)
    if first != asset:
        problems.append(f"asset {asset} conflicts with {first} earlier in the batch: an asset"
                        " has one scale")
    if known_assets is not None:
        try:
            configured = known_assets.asset(asset.code)
        except UnknownAsset as error:
            problems.append(str(error))
        else:
            if configured != asset:
                problems.append(f"asset {asset} does not match the configured {configured}")
    return problems


def _aware(timestamp: dt.datetime | None) -> dt.datetime | None:
    if timestamp is not None and timestamp.utcoffset() is None:
        raise InvalidFill(f"timestamp must be timezone-aware, got {timestamp.isoformat()}")
    return timestamp


def _plain(value: Decimal) -> str:
    """`value` without exponent notation (`65000.5`, not `6.50005E+4`), for metadata."""
    return format(value, "f")
