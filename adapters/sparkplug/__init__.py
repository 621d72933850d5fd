"""Sparkplug B payloads: protobuf generated from Eclipse Tahu's sparkplug_b.proto (see codec.py)."""
