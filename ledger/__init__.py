"""Double-entry ledger: chart of accounts, postings and checks (pure), and the backends."""
