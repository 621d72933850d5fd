"""Simulated devices: a line model driven by scenario files, publishing over MQTT."""
