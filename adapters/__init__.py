"""Adapters at the edges: files, MQTT, InfluxDB and local service processes."""
