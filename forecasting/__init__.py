"""Per-household forecasts of net surplus, backtests on real data, and the bidding policy (pure)."""
