"""Adapters at the edges: MQTT, InfluxDB, SQL, files, Grafana, TLS, the signing key and local service processes."""
