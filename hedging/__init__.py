"""Hedging: the exposure policy (pure) and the worker that turns client fills into LP orders."""
