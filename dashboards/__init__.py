"""Grafana dashboards generated from the device profiles and the stored demonstrations."""
