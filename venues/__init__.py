"""Exchange connectors behind two small protocols (market data, execution)."""
