"""Simulation harness: scenarios, simulated network and clock, real-daemon launcher, KPIs, reports."""
