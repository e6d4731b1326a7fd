"""Monitoring: alerts, the memory monitor, and (later) metrics, health and dashboards."""
