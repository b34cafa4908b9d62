"""Fermata Dealer: the RFQ dealer daemon (settings, HTTP API, persistence, services, CLI)."""

__version__ = "0.1.0"
