"""The paper matching engine: orders of simulated accounts against the market's book snapshots.

Pure: no I/O, no clock (every call is given `now_ms`), no randomness. The engine does not own the
market; each call is handed the current `BookSnapshot` of the order's symbol.

Rules (what the README documents):

- Taker fills sweep the opposite side of the given snapshot, best level first, at each level's
  price. Liquidity taken from a snapshot stays taken for every later order against the same
  snapshot (same symbol and sequence), so two orders never both take one level; a new sequence is
  a fresh market. Paper orders never match each other and never show in the book.
- MARKET orders never rest: with FOK they are all-or-nothing, otherwise (GTC or IOC) they take
  what is there. LIMIT orders take what crosses their price, then: IOC lets the remainder go,
  FOK takes all or nothing, GTC rests the remainder.
- A remainder the engine lets go ends the order EXPIRED (IOC and MARKET remainders, FOK orders
  that cannot fill in full); CANCELLED only ever answers a cancel. An unfillable FOK has no fill.
- A resting GTC order fills as maker, at its own limit price, when a later snapshot has liquidity
  at or through that price (`on_book`); it is ACCEPTED, then PARTIALLY_FILLED, then FILLED.
- Fees are charged in the asset received, like Binance: a BUY pays its fee in base, a SELL in
  quote; taker rate on taker fills, maker rate on maker fills, rounded up to 8 decimals.
- Every account starts with the starting balances. A BUY needs quote (quantity * limit price for
  a limit order, the swept cost for a market order), a SELL needs base (the quantity); short of
  it the order is REJECTED "insufficient balance" and nothing changes. A resting order locks
  what its remainder needs (free → locked) and a cancel unlocks it.
- Quantities and prices are never rounded: off the lot or tick, below the minimum quantity or
  the minimum notional, the order is REJECTED with the reason.
- A second submit with a client order id the account already used answers that order unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_UP, Decimal, InvalidOperation

from venues.base import (
    Balance,
    BookSnapshot,
    Execution,
    Fee,
    Instrument,
    Level,
    OrderRequest,
    OrderState,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    UnknownOrder,
)

TAKER = "TAKER"
MAKER = "MAKER"
FEE_QUANTUM = Decimal("0.00000001")
INSUFFICIENT_BALANCE = "insufficient balance"
_ZERO = Decimal(0)

OrderKey = tuple[str, str]  # account key, client order id
LevelKey = tuple[Side, Decimal]  # the taker side that consumed it, level price


def _is_multiple(value: Decimal, step: Decimal) -> bool:
    try:
        return value % step == 0
    except InvalidOperation:  # the quotient has more digits than the context holds
        return False


def _fee(amount: Decimal, rate: Decimal) -> Decimal:
    return (amount * rate).quantize(FEE_QUANTUM, rounding=ROUND_UP)


@dataclass(slots=True)
class _Wallet:
    free: dict[str, Decimal]
    locked: dict[str, Decimal] = field(default_factory=dict)

    def available(self, asset: str) -> Decimal:
        return self.free.get(asset, _ZERO)

    def add(self, asset: str, amount: Decimal) -> None:
        self.free[asset] = self.free.get(asset, _ZERO) + amount

    def lock(self, asset: str, amount: Decimal) -> None:
        self.free[asset] = self.free.get(asset, _ZERO) - amount
        self.locked[asset] = self.locked.get(asset, _ZERO) + amount

    def unlock(self, asset: str, amount: Decimal) -> None:
        self.lock(asset, -amount)

    def spend_locked(self, asset: str, amount: Decimal) -> None:
        self.locked[asset] = self.locked.get(asset, _ZERO) - amount


@dataclass(slots=True)
class _Order:
    request: OrderRequest
    venue_order_id: str
    status: OrderStatus
    ts_created: int
    ts_updated: int
    filled: Decimal = _ZERO
    executions: list[Execution] = field(default_factory=list)
    reject_reason: str | None = None
    locked_asset: str = ""
    locked: Decimal = _ZERO  # funds still reserved for the resting remainder

    @property
    def remaining(self) -> Decimal:
        return self.request.quantity - self.filled

    def state(self) -> OrderState:
        request = self.request
        return OrderState(
            client_order_id=request.client_order_id, venue_order_id=self.venue_order_id,
            symbol=request.symbol, side=request.side, order_type=request.order_type,
            time_in_force=request.time_in_force, quantity=request.quantity,
            limit_price=request.limit_price, status=self.status, filled_quantity=self.filled,
            executions=tuple(self.executions), ts_created=self.ts_created,
            ts_updated=self.ts_updated, reject_reason=self.reject_reason,
        )


def sweep(
    levels: Sequence[Level], taken: Mapping[LevelKey, Decimal], taker_side: Side,
    quantity: Decimal, limit_price: Decimal | None,
) -> list[Level]:
    """(price, quantity) a taker of `quantity` gets from `levels` net of what is already taken.

    Stops at the first level beyond `limit_price` (none for a market order).
    """
    fills: list[Level] = []
    remaining = quantity
    for price, size in levels:
        if remaining <= 0:
            break
        if limit_price is not None and (
            price > limit_price if taker_side is Side.BUY else price < limit_price
        ):
            break
        available = size - taken.get((taker_side, price), _ZERO)
        if available <= 0:
            continue
        quantity_here = min(available, remaining)
        fills.append((price, quantity_here))
        remaining -= quantity_here
    return fills


class MatchingEngine:
    """Accounts, orders and fills of one paper venue."""

    def __init__(
        self, venue: str, maker_fee: Decimal, taker_fee: Decimal,
        starting_balances: Mapping[str, Decimal], instruments: Mapping[str, Instrument],
    ) -> None:
        self.venue = venue
        self.maker_fee = maker_fee
        self.taker_fee = taker_fee
        self._starting_balances = dict(starting_balances)
        self._instruments = instruments
        self._wallets: dict[str, _Wallet] = {}
        self._orders: dict[OrderKey, _Order] = {}
        self._resting: dict[str, dict[OrderKey, None]] = {}  # symbol → keys in time priority
        self._taken: dict[str, tuple[int, dict[LevelKey, Decimal]]] = {}  # symbol → (seq, taken)
        self._order_count = 0
        self._execution_count = 0

    # ------------------------------------------------------------ queries

    def status(self, account_key: str, client_order_id: str) -> OrderState:
        """The order's state; UnknownOrder if this account never sent that client order id."""
        return self._order(account_key, client_order_id).state()

    def balances(self, account_key: str) -> list[Balance]:
        """Free and locked amount of every asset the account holds or held, by asset name."""
        wallet = self._wallet(account_key)
        assets = sorted(set(wallet.free) | set(wallet.locked))
        return [Balance(asset, wallet.free.get(asset, _ZERO), wallet.locked.get(asset, _ZERO))
                for asset in assets]

    def accounts_of(self, client_order_id: str) -> list[str]:
        """Accounts that sent an order with this client order id."""
        return [key for key, coid in self._orders if coid == client_order_id]

    def knows(self, account_key: str, client_order_id: str) -> bool:
        return (account_key, client_order_id) in self._orders

    def wallet(self, account_key: str) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
        """The account's free and locked amounts by asset (copies)."""
        wallet = self._wallet(account_key)
        return dict(wallet.free), dict(wallet.locked)

    def restore(self, account_key: str, state: OrderState | None,
                free: Mapping[str, Decimal], locked: Mapping[str, Decimal]) -> None:
        """Put back an account's wallet and, when given, one order as it was (a journal replay).

        A later call for the same order replaces it; a resting order rests again.
        """
        self._wallets[account_key] = _Wallet(dict(free), dict(locked))
        if state is None:
            return
        request = OrderRequest(state.client_order_id, state.symbol, state.side,
                               state.order_type, state.quantity, state.limit_price,
                               state.time_in_force)
        record = _Order(request, state.venue_order_id, state.status, state.ts_created,
                        state.ts_updated, state.filled_quantity, list(state.executions),
                        state.reject_reason)
        key = (account_key, state.client_order_id)
        resting = self._resting.setdefault(state.symbol, {})
        resting.pop(key, None)
        if not state.status.is_closed and state.limit_price is not None:
            record.locked_asset = self._instruments[state.symbol].quote if (
                state.side is Side.BUY) else self._instruments[state.symbol].base
            record.locked = (record.remaining * state.limit_price if state.side is Side.BUY
                             else record.remaining)
            resting[key] = None
        self._orders[key] = record
        self._order_count = max(self._order_count, _serial(state.venue_order_id))
        for execution in state.executions:
            self._execution_count = max(self._execution_count, _serial(execution.execution_id))

    def resting_symbols(self) -> list[str]:
        """Symbols some GTC order rests on (those whose books `on_book` should be given)."""
        return sorted(symbol for symbol, keys in self._resting.items() if keys)

    def set_balance(self, account_key: str, asset: str, free: Decimal) -> None:
        """Set the free amount of an asset (tests and tools); locked funds are left alone."""
        if not free.is_finite() or free < 0:
            raise ValueError(f"balance must be a non-negative amount, got {free}")
        self._wallet(account_key).free[asset] = free

    # ------------------------------------------------------------ commands

    def submit(
        self, account_key: str, order: OrderRequest, book: BookSnapshot, now_ms: int,
    ) -> OrderState:
        """Take `order` against `book` (the current snapshot of its symbol) and answer its state."""
        existing = self._orders.get((account_key, order.client_order_id))
        if existing is not None:
            return existing.state()
        if book.symbol != order.symbol:
            raise ValueError(f"book of {book.symbol} given for an order on {order.symbol}")
        record = self._record(account_key, order, now_ms)
        instrument = self._instruments.get(order.symbol)
        if instrument is None:
            return self._close(record, OrderStatus.REJECTED, now_ms,
                               f"unknown instrument {order.symbol}")
        refusal = _refusal(order, instrument)
        if refusal is not None:
            return self._close(record, OrderStatus.REJECTED, now_ms, refusal)

        taken = self._taken_from(book)
        levels = book.asks if order.side is Side.BUY else book.bids
        limit = order.limit_price if order.order_type is OrderType.LIMIT else None
        plan = sweep(levels, taken, order.side, order.quantity, limit)
        reference = limit if limit is not None else (plan[0][0] if plan else None)
        if reference is not None and order.quantity * reference < instrument.min_notional:
            return self._close(
                record, OrderStatus.REJECTED, now_ms,
                f"notional {order.quantity * reference} is below the minimum notional "
                f"{instrument.min_notional}")

        wallet = self._wallet(account_key)
        if order.side is Side.BUY:
            needed_asset = instrument.quote
            needed = (order.quantity * limit if limit is not None
                      else sum((price * size for price, size in plan), _ZERO))
        else:
            needed_asset, needed = instrument.base, order.quantity
        if wallet.available(needed_asset) < needed:
            return self._close(record, OrderStatus.REJECTED, now_ms, INSUFFICIENT_BALANCE)

        time_in_force = _effective_time_in_force(order)
        fillable = sum((size for _, size in plan), _ZERO)
        if time_in_force is TimeInForce.FOK and fillable < order.quantity:
            return self._close(record, OrderStatus.EXPIRED, now_ms, None)

        for price, size in plan:
            taken[(order.side, price)] = taken.get((order.side, price), _ZERO) + size
            self._fill(record, wallet, instrument, price, size, TAKER, now_ms, from_locked=False)
        if record.remaining == 0:
            return self._close(record, OrderStatus.FILLED, now_ms, None)
        if time_in_force is not TimeInForce.GTC:
            return self._close(record, OrderStatus.EXPIRED, now_ms, None)

        assert limit is not None  # only limit orders rest
        record.locked_asset = needed_asset
        record.locked = record.remaining * limit if order.side is Side.BUY else record.remaining
        wallet.lock(record.locked_asset, record.locked)
        record.status = OrderStatus.PARTIALLY_FILLED if record.filled else OrderStatus.ACCEPTED
        record.ts_updated = now_ms
        self._resting.setdefault(order.symbol, {})[(account_key, order.client_order_id)] = None
        return record.state()

    def reject(
        self, account_key: str, order: OrderRequest, reason: str, now_ms: int,
    ) -> OrderState:
        """Record `order` as received and REJECTED for `reason` (or answer the existing one)."""
        existing = self._orders.get((account_key, order.client_order_id))
        if existing is not None:
            return existing.state()
        record = self._record(account_key, order, now_ms)
        return self._close(record, OrderStatus.REJECTED, now_ms, reason)

    def cancel(self, account_key: str, client_order_id: str, now_ms: int) -> OrderState:
        """Cancel a resting order and unlock its funds; a closed order is answered unchanged."""
        record = self._order(account_key, client_order_id)
        if record.status.is_closed:
            return record.state()
        self._release(account_key, record)
        return self._close(record, OrderStatus.CANCELLED, now_ms, None)

    def on_book(self, symbol: str, book: BookSnapshot, now_ms: int) -> list[OrderState]:
        """Fill resting orders of `symbol` that `book` trades through; answer those that changed."""
        if book.symbol != symbol:
            raise ValueError(f"book of {book.symbol} given as the book of {symbol}")
        resting = self._resting.get(symbol)
        if not resting:
            return []
        taken = self._taken_from(book)
        instrument = self._instruments[symbol]
        changed: list[OrderState] = []
        for key in list(resting):
            record = self._orders[key]
            side, limit = record.request.side, record.request.limit_price
            assert limit is not None  # only limit orders rest
            levels = book.asks if side is Side.BUY else book.bids
            plan = sweep(levels, taken, side, record.remaining, limit)
            if not plan:
                continue
            wallet = self._wallet(key[0])
            for price, size in plan:
                taken[(side, price)] = taken.get((side, price), _ZERO) + size
                self._fill(record, wallet, instrument, limit, size, MAKER, now_ms,
                           from_locked=True)
            if record.remaining == 0:
                self._release(key[0], record)
                record.status = OrderStatus.FILLED
            else:
                record.status = OrderStatus.PARTIALLY_FILLED
            record.ts_updated = now_ms
            changed.append(record.state())
        return changed

    # ------------------------------------------------------------ internals

    def _order(self, account_key: str, client_order_id: str) -> _Order:
        record = self._orders.get((account_key, client_order_id))
        if record is None:
            raise UnknownOrder(f"no order with client order id {client_order_id!r}")
        return record

    def _wallet(self, account_key: str) -> _Wallet:
        wallet = self._wallets.get(account_key)
        if wallet is None:
            wallet = _Wallet(dict(self._starting_balances))
            self._wallets[account_key] = wallet
        return wallet

    def _record(self, account_key: str, order: OrderRequest, now_ms: int) -> _Order:
        self._order_count += 1
        record = _Order(order, f"{self.venue}-O{self._order_count}", OrderStatus.ACCEPTED,
                        now_ms, now_ms)
        self._orders[(account_key, order.client_order_id)] = record
        return record

    def _close(
        self, record: _Order, status: OrderStatus, now_ms: int, reason: str | None,
    ) -> OrderState:
        record.status = status
        record.reject_reason = reason
        record.ts_updated = now_ms
        return record.state()

    def _release(self, account_key: str, record: _Order) -> None:
        """Unlock what the order still reserves and take it off the resting list."""
        if record.locked:
            self._wallet(account_key).unlock(record.locked_asset, record.locked)
            record.locked = _ZERO
        resting = self._resting.get(record.request.symbol)
        if resting is not None:
            resting.pop((account_key, record.request.client_order_id), None)

    def _taken_from(self, book: BookSnapshot) -> dict[LevelKey, Decimal]:
        """What earlier orders took from this snapshot; a new sequence starts afresh."""
        current = self._taken.get(book.symbol)
        if current is None or current[0] != book.sequence:
            current = (book.sequence, {})
            self._taken[book.symbol] = current
        return current[1]

    def _fill(
        self, record: _Order, wallet: _Wallet, instrument: Instrument, price: Decimal,
        size: Decimal, liquidity: str, now_ms: int, *, from_locked: bool,
    ) -> None:
        rate = self.taker_fee if liquidity == TAKER else self.maker_fee
        notional = price * size
        if record.request.side is Side.BUY:
            paid_asset, paid, got_asset, got = instrument.quote, notional, instrument.base, size
        else:
            paid_asset, paid, got_asset, got = instrument.base, size, instrument.quote, notional
        fee = _fee(got, rate)
        if from_locked:
            wallet.spend_locked(paid_asset, paid)
            record.locked -= paid
        else:
            wallet.add(paid_asset, -paid)
        wallet.add(got_asset, got - fee)
        self._execution_count += 1
        record.executions.append(Execution(
            execution_id=f"{self.venue}-{self._execution_count}", price=price, quantity=size,
            fee=Fee(got_asset, fee), liquidity=liquidity, ts_event=now_ms))
        record.filled += size


def _serial(identifier: str) -> int:
    """The counter at the end of an engine id (`BINANCE-O12` → 12), 0 for anything else."""
    digits = identifier.rsplit("-", 1)[-1].lstrip("O")
    return int(digits) if digits.isdigit() else 0


def _effective_time_in_force(order: OrderRequest) -> TimeInForce:
    """MARKET orders never rest: FOK stays all-or-nothing, anything else behaves as IOC."""
    if order.order_type is OrderType.MARKET and order.time_in_force is not TimeInForce.FOK:
        return TimeInForce.IOC
    return order.time_in_force


def _refusal(order: OrderRequest, instrument: Instrument) -> str | None:
    """Why the instrument's rules refuse the order, or None."""
    quantity = order.quantity
    if not quantity.is_finite() or quantity <= 0:
        return f"quantity must be positive, got {quantity}"
    if not _is_multiple(quantity, instrument.lot_size):
        return f"quantity {quantity} is not a multiple of the lot size {instrument.lot_size}"
    if quantity < instrument.min_quantity:
        return f"quantity {quantity} is below the minimum quantity {instrument.min_quantity}"
    if instrument.max_quantity is not None and quantity > instrument.max_quantity:
        return f"quantity {quantity} is above the maximum quantity {instrument.max_quantity}"
    if order.order_type is OrderType.LIMIT:
        price = order.limit_price
        if price is None:
            return "a limit order needs a limit price"
        if not price.is_finite() or price <= 0:
            return f"limit price must be positive, got {price}"
        if not _is_multiple(price, instrument.tick_size):
            return f"limit price {price} is not a multiple of the tick size {instrument.tick_size}"
    return None
