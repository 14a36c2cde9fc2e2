"""Telemetry plumbing: the event bus, log rings, metrics. trio allowed; no web framework."""
