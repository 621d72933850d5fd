"""The collector's health reporter on its own: what it writes, and what it keeps when InfluxDB does not take it."""

from __future__ import annotations

import httpx

from adapters.influxdb import InfluxClient, InfluxSettings
from collector.health import HealthReporter
from pilot_core.contract import Channel, Topic
from pilot_core.live import CollectorHealth
from pilot_core.validation import Rejection, RejectReason


def reporter(statuses: list[int], bodies: list[str]) -> HealthReporter:
    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content.decode())
        return httpx.Response(statuses.pop(0), text="refused" if statuses else "")

    influx = InfluxClient(InfluxSettings(url="http://influx.test"), transport=httpx.MockTransport(handler))
    return HealthReporter(
        influx, "c1", 10, lambda at_ms: CollectorHealth("c1", at_ms, 5, 0, 0, True, True), clock=lambda: 1.0
    )


def test_refusals_alike_in_one_millisecond_are_one_point_and_a_failed_report_is_sent_again() -> None:
    bodies: list[str] = []
    health = reporter([503, 204], bodies)
    rejection = Rejection(RejectReason.UNKNOWN_STATE, "no such state", Topic("s", "l", "d", Channel.STATE))
    health.refused(rejection)
    health.refused(rejection)
    assert not health.report()  # InfluxDB unavailable: kept
    assert health.report()
    first, second = (body.splitlines() for body in bodies)
    assert first[0] == (
        'dead_letter,channel=state,collector=c1,device=d,line=l,reason=unknown_state,site=s detail="no such state",'
        "count=2i 1000"
    )
    assert first[1].startswith("collector_health,collector=c1 backlog=5i")
    assert second[0] == first[0] and len(second) == 2  # the dead letters again, with a new health point


def test_points_influxdb_refused_are_not_sent_again() -> None:
    bodies: list[str] = []
    health = reporter([400, 204], bodies)
    health.refused(Rejection(RejectReason.BAD_TOPIC, "no", None))
    assert not health.report()
    assert health.report()
    assert len(bodies[1].splitlines()) == 1 and bodies[1].startswith("collector_health")
