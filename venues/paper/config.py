"""Paper connector configuration: identities, fees, instrument rules and the simulation knobs.

Everything here is data: the registry builds one `PaperConfig` from the `paper_*` settings and
every `PaperVenue` resolves its venue's fees and instrument rules from the tables below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from venues.base import Instrument, VenueIdentity, split_symbol
from venues.fees import default_fees

# External trading account ids per venue, as in seeds/000's tables; others get a spot account.
PAPER_IDENTITIES: dict[str, tuple[VenueIdentity, ...]] = {
    "BINANCE": (
        VenueIdentity("spot", "SPOT", "SPOT", "Spot trading account"),
        VenueIdentity("margin", "MARGIN", "MARGIN", "Cross margin account"),
        VenueIdentity("isolated_margin", "MARGIN", "ISOLATED_MARGIN", "Isolated margin accounts"),
        VenueIdentity("futures", "FUTURES", "USDT_FUTURES", "USDT-M Futures"),
        VenueIdentity("coin_futures", "FUTURES", "COIN_FUTURES", "COIN-M Futures"),
    ),
    "OKX": (
        VenueIdentity("trading", "UNIFIED", "TRADING", "Unified trading account"),
        VenueIdentity("funding", "FUNDING", "FUNDING", "Funding account"),
    ),
    "BYBIT": (
        VenueIdentity("unified", "UNIFIED", "UNIFIED", "Unified Trading Account"),
        VenueIdentity("spot", "SPOT", "SPOT", "Spot account"),
        VenueIdentity("contract", "FUTURES", "CONTRACT", "Derivatives account"),
    ),
}
DEFAULT_IDENTITIES: tuple[VenueIdentity, ...] = (
    VenueIdentity("spot", "SPOT", "SPOT", "Spot trading account"),
)


def identities_for(venue: str) -> tuple[VenueIdentity, ...]:
    return PAPER_IDENTITIES.get(venue.upper(), DEFAULT_IDENTITIES)


def venue_family(venue: str) -> str:
    """`BINANCE_UAT` and `BINANCE_SANDBOX` trade by BINANCE's rules."""
    return venue.upper().split("_", 1)[0]


# ---------------------------------------------------------------- simulation settings


def default_starting_balances() -> dict[str, Decimal]:
    return {"USDT": Decimal(1_000_000), "USDC": Decimal(1_000_000), "BTC": Decimal(20),
            "ETH": Decimal(300)}


@dataclass(frozen=True, slots=True)
class PaperConfig:
    """How every paper venue simulates its market and its faults.

    `maker_fee` / `taker_fee` left at None take the venue's default (`venues.fees`, the rates
    the dealer assumes); set, they apply to every venue built from this config. With
    `journal_dir`, each venue appends its order events to `<journal_dir>/<venue>.jsonl` and
    reloads them when built again, as a real exchange would still know them after our restart.
    """

    books_dir: Path | None = None
    seed: int = 7
    book_interval_ms: int = 100
    latency_ms: int = 0
    reject_ratio: float = 0.0
    timeout_ratio: float = 0.0
    lost_ratio: float = 0.0
    starting_balances: dict[str, Decimal] = field(default_factory=default_starting_balances)
    maker_fee: Decimal | None = None
    taker_fee: Decimal | None = None
    journal_dir: Path | None = None  # orders and balances survive a restart (crash tests)

    def __post_init__(self) -> None:
        if self.book_interval_ms <= 0:
            raise ValueError("book_interval_ms must be positive")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must not be negative")
        for name, ratio in (("reject_ratio", self.reject_ratio),
                            ("timeout_ratio", self.timeout_ratio),
                            ("lost_ratio", self.lost_ratio)):
            if not 0.0 <= ratio <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {ratio}")
        for asset, amount in self.starting_balances.items():
            if amount < 0:
                raise ValueError(f"starting balance of {asset} must not be negative")

    def fees_for(self, venue: str) -> tuple[Decimal, Decimal]:
        """(maker, taker) fee rates of `venue`: the configured ones, else the venue's default."""
        default_maker, default_taker = default_fees(venue)
        maker = self.maker_fee if self.maker_fee is not None else default_maker
        taker = self.taker_fee if self.taker_fee is not None else default_taker
        return maker, taker


# ---------------------------------------------------------------- instruments


@dataclass(frozen=True, slots=True)
class SymbolRules:
    """Tick, lot and minimums of one symbol; min_quantity is one lot unless given."""

    tick_size: Decimal
    lot_size: Decimal
    min_notional: Decimal
    min_quantity: Decimal | None = None


@dataclass(frozen=True, slots=True)
class VenueStyle:
    """How a venue family spells symbols and sizes its instruments."""

    separator: str  # between base and quote in the venue's own symbol
    rules: dict[str, SymbolRules]


# The fixed spot catalogue every paper venue lists (plus the symbols it has replay files for).
CATALOGUE: tuple[str, ...] = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "BTC/USDC", "ETH/BTC")

_D = Decimal
VENUE_STYLES: dict[str, VenueStyle] = {
    "BINANCE": VenueStyle("", {
        "BTC/USDT": SymbolRules(_D("0.01"), _D("0.00001"), _D("5")),
        "ETH/USDT": SymbolRules(_D("0.01"), _D("0.0001"), _D("5")),
        "SOL/USDT": SymbolRules(_D("0.01"), _D("0.001"), _D("5")),
        "BTC/USDC": SymbolRules(_D("0.01"), _D("0.00001"), _D("5")),
        "ETH/BTC": SymbolRules(_D("0.00001"), _D("0.0001"), _D("0.0001")),
    }),
    "OKX": VenueStyle("-", {
        "BTC/USDT": SymbolRules(_D("0.1"), _D("0.00000001"), _D("10"), _D("0.00001")),
        "ETH/USDT": SymbolRules(_D("0.01"), _D("0.000001"), _D("10"), _D("0.0001")),
        "SOL/USDT": SymbolRules(_D("0.01"), _D("0.000001"), _D("10"), _D("0.001")),
        "BTC/USDC": SymbolRules(_D("0.1"), _D("0.00000001"), _D("10"), _D("0.00001")),
        "ETH/BTC": SymbolRules(_D("0.00001"), _D("0.000001"), _D("0.0001"), _D("0.0001")),
    }),
    "BYBIT": VenueStyle("", {
        "BTC/USDT": SymbolRules(_D("0.01"), _D("0.000001"), _D("5"), _D("0.000048")),
        "ETH/USDT": SymbolRules(_D("0.01"), _D("0.00001"), _D("5"), _D("0.00062")),
        "SOL/USDT": SymbolRules(_D("0.01"), _D("0.001"), _D("5")),
        "BTC/USDC": SymbolRules(_D("0.01"), _D("0.000001"), _D("5"), _D("0.000048")),
        "ETH/BTC": SymbolRules(_D("0.000001"), _D("0.00001"), _D("0.0001")),
    }),
}
# Venues without a style of their own: `BTC-USDT`, Binance-like sizes, min notional 10.
DEFAULT_STYLE = VenueStyle("-", {
    "BTC/USDT": SymbolRules(_D("0.01"), _D("0.00001"), _D("10")),
    "ETH/USDT": SymbolRules(_D("0.01"), _D("0.0001"), _D("10")),
    "SOL/USDT": SymbolRules(_D("0.01"), _D("0.001"), _D("10")),
    "BTC/USDC": SymbolRules(_D("0.01"), _D("0.00001"), _D("10")),
    "ETH/BTC": SymbolRules(_D("0.00001"), _D("0.0001"), _D("0.0001")),
})

# Quotes whose replayed symbols outside the catalogue get the venue's USD minimum notional;
# others have none.
_USD_MIN_NOTIONAL_QUOTES = frozenset({"USDT", "USDC", "USD", "FDUSD"})


def style_for(venue: str) -> VenueStyle:
    return VENUE_STYLES.get(venue_family(venue), DEFAULT_STYLE)


def external_symbol(venue: str, symbol: str) -> str:
    """The venue's own spelling: `BTCUSDT` on Binance and Bybit, `BTC-USDT` on OKX."""
    base, quote = split_symbol(symbol)
    return f"{base}{style_for(venue).separator}{quote}"


def make_instrument(venue: str, symbol: str, rules: SymbolRules) -> Instrument:
    base, quote = split_symbol(symbol)
    return Instrument(
        venue=venue, symbol=symbol, external_symbol=external_symbol(venue, symbol), base=base,
        quote=quote, tick_size=rules.tick_size, lot_size=rules.lot_size,
        min_quantity=rules.min_quantity if rules.min_quantity is not None else rules.lot_size,
        max_quantity=None, min_notional=rules.min_notional,
    )


def catalogue_instrument(venue: str, symbol: str) -> Instrument | None:
    """The catalogue's instrument for `symbol` on `venue`, None when the catalogue lacks it."""
    rules = style_for(venue).rules.get(symbol)
    return make_instrument(venue, symbol, rules) if rules is not None else None


def replay_rules(venue: str, symbol: str, tick_size: Decimal, lot_size: Decimal) -> SymbolRules:
    """Rules of a replayed symbol outside the catalogue: tick and lot as fine as its file's."""
    _, quote = split_symbol(symbol)
    usd_like = quote in _USD_MIN_NOTIONAL_QUOTES
    min_notional = style_for(venue).rules["BTC/USDT"].min_notional if usd_like else Decimal(0)
    return SymbolRules(tick_size, lot_size, min_notional)
