"""The collector service: wires MQTT intake, processing and InfluxDB output.

The MQTT network thread only queues what it receives. One worker thread
takes batches from the queue in arrival order, validates and encodes them,
writes them to InfluxDB, dead-letters what was refused, and only then
acknowledges the batch to the broker.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from adapters.catalog import load_profiles, load_registry
from adapters.influxdb import InfluxClient, InfluxError
from adapters.mqtt import connect_and_wait, new_client
from collector.dead_letter import publish_dead_letter
from collector.metrics import CollectorMetrics
from collector.output import InfluxOutput
from collector.processing import BatchOutcome, Inbound, Limits, ProcessorProcess, topic_or_none
from collector.settings import CollectorSettings
from collector.spool import Spool, SpooledBatch, SpoolFull
from pilot_core.broker_accounts import heartbeat_topic
from pilot_core.registry import DeviceRegistry
from pilot_core.validation import Rejection, RejectReason

log = logging.getLogger("pilot.collector")

DEAD_LETTER_ACK_TIMEOUT_S = 10.0


class InfluxUnreachable(InfluxError):
    """InfluxDB did not answer: the collector spools until it does."""


class Collector:
    def __init__(self, settings: CollectorSettings, registry: DeviceRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or load_registry(settings.devices_file, load_profiles(settings.profiles_dir))
        self.metrics = CollectorMetrics()
        self.influx = InfluxClient(settings.influx)
        self._queue: queue.SimpleQueue[Inbound] = queue.SimpleQueue()
        self._in_flight = 0  # taken from the queue, not yet acknowledged
        self._accepting = True
        self._generation = 0
        self._store_checked = False  # pinged, and the database created where the server allows
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self.output = InfluxOutput(self.influx, self.metrics, self._abort)
        self.processor = ProcessorProcess(self.registry, Limits.from_settings(settings))
        self.spool = Spool(settings.spool_dir, settings.spool_quota_mb * 1024 * 1024)
        self._spooled = threading.Event()  # wakes the replayer
        self.metrics.watch_backlog(lambda: self._queue.qsize() + self._in_flight)
        self.metrics.watch_spool(lambda: self.spool.pending, lambda: self.spool.bytes, self.spool.quota_bytes)
        self._client = new_client(settings.mqtt, settings.client_id, manual_ack=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.on_publish = self._on_publish
        self._refused_publishes: dict[int, str] = {}  # mid → the broker's reason, until _dead_letter reads it
        self._subscribed = threading.Event()
        self._subscription_mid: int | None = None
        self._worker = threading.Thread(target=self._work, name="pilot-collector-worker", daemon=True)
        self._replayer = threading.Thread(target=self._replay, name="pilot-collector-replay", daemon=True)
        # The collector publishes to itself: a connection that stays up while deliveries stop is found out.
        self.heartbeat_topic = heartbeat_topic(settings.client_id)
        self._last_heartbeat = time.monotonic()
        self._watchdog = threading.Thread(target=self._watch, name="pilot-collector-watchdog", daemon=True)

    # --- lifecycle -------------------------------------------------------

    def start(self) -> None:
        try:
            self._check_store()
        except InfluxUnreachable as exc:
            # Nothing is lost meanwhile: batches go to the disk spool until InfluxDB answers.
            log.warning("%s; collecting anyway, into the spool at %s", exc, self.settings.spool_dir)
        self.processor.start()
        if self.settings.metrics_port:
            self.metrics.serve(self.settings.metrics_host, self.settings.metrics_port)
            log.info("metrics on http://%s:%d/metrics", self.settings.metrics_host, self.settings.metrics_port)
        self._worker.start()
        self._replayer.start()
        if self.settings.watchdog_s:
            self._watchdog.start()
        connect_and_wait(
            self._client,
            self.settings.mqtt,
            persistent_session_s=self.settings.session_expiry_s,
            receive_maximum=65535,
        )
        # A new session receives nothing published before its SUBACK: return only once subscribed.
        if not self._subscribed.wait(10):
            log.warning("the broker has not confirmed the subscription to %s yet", self.settings.subscription)
        log.info(
            "collecting %s from %s as %r: %d devices, %d profiles",
            self.settings.subscription,
            self.settings.mqtt.address,
            self.settings.client_id,
            len(self.registry),
            len(self.registry.catalog),
        )

    def stop(self) -> None:
        """Flush what was received, acknowledge it, then disconnect."""
        if self._stopping.is_set():
            return
        self._accepting = False  # later deliveries stay unacknowledged and return next session
        self._stopping.set()
        self._worker.join(self.settings.shutdown_timeout_s)
        if self._worker.is_alive():
            log.error(
                "shutdown: InfluxDB did not take the last batch within %.0f s; it stays unacknowledged "
                "and the broker will deliver it again",
                self.settings.shutdown_timeout_s,
            )
            self._abort.set()
            self._worker.join(10)
        self._abort.set()  # the spool is durable: replaying stops here and resumes at the next start
        self._spooled.set()
        self._replayer.join(30)
        self._client.disconnect()
        self._client.loop_stop()
        self.processor.close()
        self.influx.close()
        log.info("collector stopped")

    def _check_store(self) -> None:
        """Ping InfluxDB and create the database; InfluxUnreachable if it does not answer (it is checked again
        before the next write). Wrong credentials raise InfluxError: every write would fail too."""
        if self._store_checked:
            return
        try:
            version = self.influx.ping()
        except InfluxError as exc:
            raise InfluxUnreachable(str(exc)) from None
        created = self.influx.ensure_database()
        self._store_checked = True
        log.info(
            "InfluxDB %s at %s, database %r (%s)",
            version,
            self.settings.influx.url,
            self.settings.influx.database,
            "created or present" if created else "managed by the server",
        )

    def _store_ready(self) -> bool:
        try:
            self._check_store()
        except InfluxError as exc:
            log.debug("InfluxDB not ready: %s", exc)
            return False
        return True

    def run_forever(self) -> None:
        self._stopping.wait()

    @property
    def backlog(self) -> int:
        return self._queue.qsize() + self._in_flight

    # --- MQTT callbacks (network thread: keep them cheap) ------------------

    def _on_connect(
        self, client: paho.Client, userdata: object, flags: object, reason: ReasonCode, props: object
    ) -> None:
        if reason.is_failure:
            log.error("MQTT connection refused: %s", reason)
            return
        self._generation += 1
        self.metrics.connected.set(1)
        # Subscribe on every connect: a broker that lost our session must get it back.
        _, self._subscription_mid = client.subscribe(self.settings.subscription, qos=1)
        if self.settings.watchdog_s:
            client.subscribe(self.heartbeat_topic, qos=0)
        self._last_heartbeat = time.monotonic()
        log.info("connected to MQTT broker (session present: %s)", getattr(flags, "session_present", "?"))

    def _on_publish(self, client: paho.Client, userdata: object, mid: int, reason: ReasonCode, props: object) -> None:
        # A PUBACK that refuses (an ACL denying the dead-letter topic, say) is not a stored dead letter.
        if reason.is_failure:
            self._refused_publishes[mid] = str(reason)

    def _on_subscribe(self, client: paho.Client, userdata: object, mid: int, reasons: list[Any], props: object) -> None:
        if mid == self._subscription_mid:
            refused = [r for r in reasons if getattr(r, "is_failure", False)]
            if refused:
                log.error("the broker refused the subscription to %s: %s", self.settings.subscription, refused[0])
            else:
                self._subscribed.set()

    def _on_disconnect(
        self, client: paho.Client, userdata: object, flags: object, reason: ReasonCode, props: object
    ) -> None:
        self.metrics.connected.set(0)
        if not self._stopping.is_set():
            log.warning("disconnected from MQTT broker (%s); reconnecting", reason)

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        if message.topic == self.heartbeat_topic:
            self._last_heartbeat = time.monotonic()
            return
        if self._accepting:
            self._queue.put(Inbound(message.topic, bytes(message.payload), message.mid, message.qos, self._generation))

    def _watch(self) -> None:
        """Publish a heartbeat to ourselves; if none comes back for ``watchdog_s``, reconnect."""
        period = self.settings.watchdog_s
        while not self._stopping.wait(period / 4):
            if not self._client.is_connected():
                self._last_heartbeat = time.monotonic()  # paho is reconnecting already
                continue
            self._client.publish(self.heartbeat_topic, b"", qos=0)
            silent_s = time.monotonic() - self._last_heartbeat
            if silent_s > period:
                log.error(
                    "connected to the broker but nothing delivered for %.0f s, not even our own heartbeat: "
                    "reconnecting (and subscribing again)",
                    silent_s,
                )
                self.metrics.watchdog_reconnects.inc()
                self._last_heartbeat = time.monotonic()
                # Cut the connection and let paho's own loop reconnect (and on_connect subscribe again):
                # calling reconnect() from this thread races that loop, and two CONNECTs for one client id
                # left a session that took the heartbeat but delivered no data.
                sock = self._client.socket()
                if isinstance(sock, socket.socket):  # TLS sockets too; a websocket has its own
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError as exc:
                        log.warning("could not cut the silent connection (%s); paho keeps trying", exc)

    # --- worker ----------------------------------------------------------

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if batch:
                try:
                    self._handle(batch)
                except Exception:  # never let one batch kill the collector
                    log.exception(
                        "unexpected error handling a batch of %d messages; they stay unacknowledged", len(batch)
                    )
                    self.metrics.batches.labels("error").inc()
                    self.processor.forget_sequences()
                finally:
                    self._in_flight = 0
            elif self._stopping.is_set():
                return

    def _take_batch(self) -> list[Inbound]:
        size = self.settings.batch_size
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.settings.flush_interval_s
        while len(batch) < size:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                if self._stopping.is_set():
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(self._queue.get(timeout=min(remaining, 0.05)))
                except queue.Empty:
                    continue
        self._in_flight = len(batch)
        return batch

    def _handle(self, messages: list[Inbound]) -> None:
        outcome = self.processor.process([(m.topic, m.payload) for m in messages])
        self._count(len(messages), outcome)
        # While the spool holds batches, new ones queue behind them, so InfluxDB gets them in order.
        if self.spool.pending and self._spool(messages, outcome):
            return
        if not self._store_ready() and self._spool(messages, outcome):
            return
        report = self.output.write(outcome.lines, give_up_after_s=self.settings.spool_after_s)
        if report.deferred:
            if self._spool(messages, outcome):
                return
            report = self.output.write(outcome.lines)  # the spool is full: wait for InfluxDB, unacknowledged
        if not report.completed:
            self.metrics.batches.labels("abandoned").inc()
            self.processor.forget_sequences()
            return  # unacknowledged: the broker redelivers
        self.metrics.points_written.inc(report.written)
        refused = [(messages[i], rejection) for i, rejection in outcome.rejected]
        refused += self._refused_by_store(messages, outcome, report.refused)
        if not self._dead_letter(refused):
            self.metrics.batches.labels("dead_letter_failed").inc()
            return
        self._acknowledge(messages)
        self.metrics.batches.labels("written").inc()

    def _spool(self, messages: list[Inbound], outcome: BatchOutcome) -> bool:
        """Make the batch durable on disk and acknowledge it; False if the spool is full."""
        owners = sorted(set(outcome.line_owner))
        index = {owner: n for n, owner in enumerate(owners)}
        batch = SpooledBatch(
            outcome.lines,
            [index[owner] for owner in outcome.line_owner],
            [(messages[owner].topic, messages[owner].payload) for owner in owners],
        )
        try:
            self.spool.append(batch)
        except SpoolFull as full:
            log.error("%s: this batch waits for InfluxDB in memory, unacknowledged", full)
            self.metrics.batches.labels("spool_full").inc()
            return False
        self._spooled.set()
        refused = [(messages[i], rejection) for i, rejection in outcome.rejected]
        if not self._dead_letter(refused):
            self.metrics.batches.labels("dead_letter_failed").inc()
            return True  # the valid part is durable; the batch comes again and its points land twice, harmlessly
        self._acknowledge(messages)
        self.metrics.batches.labels("spooled").inc()
        return True

    def _replay(self) -> None:
        """Write spooled batches to InfluxDB in order, each dropped from the spool once written."""
        while not self._abort.is_set():
            record = self.spool.peek()
            if record is None:
                self._spooled.wait(1.0)
                self._spooled.clear()
                continue
            if not self._store_ready():
                self._abort.wait(1.0)
                continue
            try:
                report = self.output.write(record.batch.lines)
                if not report.completed:
                    return  # stopping: the record stays in the spool for the next start
                refused = self._refused_spooled(record.batch, report.refused)
                if not self._dead_letter(refused):
                    time.sleep(1.0)  # the broker did not confirm; write and dead-letter again
                    continue
            except Exception:  # never let one record stop the replay
                log.exception("unexpected error replaying a spooled batch; retrying")
                time.sleep(1.0)
                continue
            self.spool.commit(record)
            self.metrics.points_written.inc(report.written)
            self.metrics.batches.labels("replayed").inc()
            if not self.spool.pending:
                log.info("spool drained: every spooled batch is in InfluxDB")

    @staticmethod
    def _refused_spooled(batch: SpooledBatch, refused_lines: list[tuple[int, str]]) -> list[tuple[Inbound, Rejection]]:
        owners: dict[int, str] = {}
        for line_index, message in refused_lines:
            owners.setdefault(batch.line_owner[line_index], message)
        refused = []
        for owner, message in owners.items():
            topic, payload = batch.messages[owner]
            inbound = Inbound(topic, payload, 0, 0, -1)  # already acknowledged when spooled
            log.error("InfluxDB refused a spooled point from %s: %s", topic, message)
            refused.append((inbound, Rejection(RejectReason.STORE_REJECTED, message, topic_or_none(inbound.topic))))
        return refused

    def _count(self, received: int, outcome: BatchOutcome) -> None:
        self.metrics.received.inc(received)
        self.metrics.accepted.inc(received - len(outcome.rejected) - len(outcome.duplicates))
        for stream in outcome.duplicates:
            self.metrics.duplicates.labels(*stream).inc()
        for stream, missing in outcome.seq_gaps:
            self.metrics.seq_gaps.labels(*stream).inc(missing)

    @staticmethod
    def _refused_by_store(
        messages: list[Inbound], outcome: BatchOutcome, refused_lines: list[tuple[int, str]]
    ) -> list[tuple[Inbound, Rejection]]:
        """Lines InfluxDB refused (a type conflict with older data, say) go to the dead letter too."""
        owners: dict[int, str] = {}
        for line_index, message in refused_lines:
            owners.setdefault(outcome.line_owner[line_index], message)
        refused = []
        for owner, message in owners.items():
            inbound = messages[owner]
            log.error("InfluxDB refused a point from %s: %s", inbound.topic, message)
            refused.append((inbound, Rejection(RejectReason.STORE_REJECTED, message, topic_or_none(inbound.topic))))
        return refused

    def _dead_letter(self, refused: list[tuple[Inbound, Rejection]]) -> bool:
        infos = []
        for inbound, rejection in refused:
            self.metrics.rejected.labels(rejection.reason.value).inc()
            log.info("refused %s: %s: %s", inbound.topic, rejection.reason.value, rejection.detail)
            infos.append(
                publish_dead_letter(
                    self._client,
                    self.settings.dead_letter_topic,
                    inbound.topic,
                    inbound.payload,
                    rejection,
                    self.settings.client_id,
                )
            )
        try:
            for info in infos:
                info.wait_for_publish(DEAD_LETTER_ACK_TIMEOUT_S)
        except (RuntimeError, ValueError) as exc:
            log.warning("dead-letter publish failed (%s); the refused messages stay unacknowledged", exc)
            return False
        refusals = [self._refused_publishes.pop(info.mid, None) for info in infos]
        for (inbound, _), refusal in zip(refused, refusals, strict=True):
            if refusal is not None:
                log.error(
                    "the broker refused the dead letter of %s (%s): the message stays unacknowledged; let this"
                    " collector's account write %s/#",
                    inbound.topic,
                    refusal,
                    self.settings.dead_letter_topic,
                )
        return all(info.is_published() for info in infos) and not any(refusals)

    def _acknowledge(self, messages: list[Inbound]) -> None:
        generation = self._generation
        for message in messages:
            # A message from an earlier connection is redelivered on this one; acking
            # its old packet id here could acknowledge a different message.
            if message.qos and message.generation == generation:
                self._client.ack(message.mid, message.qos)
