"""The hub: receives shelf frames, keeps the perpetual ledger, reconciles, serves the status page."""
