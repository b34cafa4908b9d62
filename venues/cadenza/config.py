"""Configuration of the cadenza connector: where Cadenza is, how to authenticate, how hard to try.

Built by the app factory from `DEALER_CADENZA_*` settings and passed to `CadenzaVenue`; nothing
here reads the environment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class CadenzaConfig:
    """Everything one `CadenzaVenue` needs; the token never appears in `repr`."""

    base_url: str  # REST root, e.g. https://cadenza-api-uat.algo724.com (paths add /api/v3/…)
    ws_url: str  # Centrifugo endpoint, e.g. wss://cadenza-ws-uat.algo724.com/connection/websocket
    token: str = field(repr=False)
    timeout_ms: int = 5000  # one REST call (order submit gets one extra second for awaitClosed)
    rate_limit_per_s: float = 20.0  # REST calls per second, all calls of the connector together
    max_retries: int = 3  # extra attempts of an idempotent call (GETs); never for submit
    backoff_base_ms: int = 100  # first retry / reconnect delay, doubled per attempt, jittered
    reconnect_max_ms: int = 5000  # cap of every backoff delay
    rate_burst: int | None = None  # calls allowed at once; None: one second's worth
    status_lookup_limit: int = 1000  # recent orders scanned to find a client order id
    status_page_size: int = 100  # orders per order/list page while scanning
    client_name: str = "fermata-dealer"  # the websocket `connect.name`
    ping_margin_ms: int = 10000  # silence beyond the server's ping interval = a dead connection

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError("cadenza base_url must be an http(s) URL")
        if not self.ws_url.startswith(("ws://", "wss://")):
            raise ValueError("cadenza ws_url must be a ws(s) URL")
        if not self.token:
            raise ValueError("cadenza token is required")
        if self.timeout_ms < 1:
            raise ValueError("cadenza timeout_ms must be positive")
        if not self.rate_limit_per_s > 0:
            raise ValueError("cadenza rate_limit_per_s must be positive")
        if self.max_retries < 0 or self.backoff_base_ms < 0 or self.ping_margin_ms < 0:
            raise ValueError("cadenza max_retries, backoff_base_ms and ping_margin_ms must not "
                             "be negative")
        if self.reconnect_max_ms < self.backoff_base_ms:
            raise ValueError("cadenza reconnect_max_ms must be at least backoff_base_ms")
        if self.rate_burst is not None and self.rate_burst < 1:
            raise ValueError("cadenza rate_burst must be at least 1")
        if self.status_lookup_limit < 1 or not 1 <= self.status_page_size <= 1000:
            raise ValueError("cadenza status_lookup_limit must be at least 1 and "
                             "status_page_size within [1, 1000]")

    def __repr__(self) -> str:
        return (f"CadenzaConfig(base_url={self.base_url!r}, ws_url={self.ws_url!r}, "
                f"token=<redacted>, timeout_ms={self.timeout_ms}, "
                f"rate_limit_per_s={self.rate_limit_per_s}, max_retries={self.max_retries})")

    @property
    def burst(self) -> int:
        """Token-bucket capacity."""
        if self.rate_burst is not None:
            return self.rate_burst
        return max(1, math.ceil(self.rate_limit_per_s))

    @property
    def rest_root(self) -> str:
        return self.base_url.rstrip("/")
