"""HTTP API: one module per area, each registering its endpoints on the shared `Api`."""
