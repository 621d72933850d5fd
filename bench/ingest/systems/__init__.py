"""The systems under test, one module each: what starts it, what it is fed, and when it is done.

``bare`` (paho, count only), ``collector`` (one process, two sharing a subscription as ``collector-2``,
and batched messages), ``naive`` (one POST /write per message) and ``node_red`` (the peer's batched and
per-message flows). Each has a ``phase_…`` function; ``bench.ingest.phases`` names them.
"""
