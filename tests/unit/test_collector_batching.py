"""Where the collector closes a batch: at batch_size messages or batch_max_bytes of payload."""

from __future__ import annotations

from adapters.mqtt_packets import Delivery
from collector.service import _cut


def deliveries(*sizes: int) -> list[Delivery]:
    return [Delivery("t", b"x" * size, n + 1, 1, 1) for n, size in enumerate(sizes)]


def test_a_batch_closes_at_its_message_count_or_its_bytes_whichever_comes_first() -> None:
    assert _cut(deliveries(10, 10, 10, 10), size=3, max_bytes=1000) == 3
    assert _cut(deliveries(400, 400, 400, 400), size=3, max_bytes=1000) == 3  # the third crosses 1,000 bytes
    assert _cut(deliveries(600, 600, 600), size=3, max_bytes=1000) == 2
    assert _cut(deliveries(10, 10), size=3, max_bytes=1000) == 2


def test_a_message_larger_than_a_batch_is_a_batch_of_its_own() -> None:
    assert _cut(deliveries(5000, 10), size=3, max_bytes=1000) == 1
