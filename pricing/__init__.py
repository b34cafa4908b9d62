"""Pure pricing: order-book snapshots, consolidation across LPs, sweeps, spread, skew, rounding."""
