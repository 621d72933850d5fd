"""The collector service: wires MQTT intake, processing and InfluxDB output.

The MQTT reader thread (``adapters.mqtt_intake``) only queues what it
receives, a read's worth of messages at a time. Two stages follow, each a
thread, with one batch between them: the first takes batches from the queue in
arrival order and has them validated and encoded in a child process; the
second writes each to InfluxDB (or the disk spool), dead-letters what was
refused, and only then acknowledges the batch to the broker. So batch N+1 is
validated while batch N is written, and batches are still written and
acknowledged in arrival order. A batch that fails (its validation, its dead
letters, an unexpected error) is retried with backoff until it is durable,
and counts in the backlog until then: it is never left unacknowledged while
the connection stays up. Every thread runs under ``collector.supervision``:
none ends silently.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

from adapters.catalog import load_profiles, load_registry
from adapters.influxdb import InfluxClient, InfluxError
from adapters.mqtt_intake import IntakeConnection
from adapters.mqtt_packets import Delivery
from adapters.sparkplug.codec import host_state, rebirth_command
from collector.dead_letter import dead_letter_payload, dead_letter_topic
from collector.health import HEALTH_TIMEOUT_S, HealthReporter
from collector.metrics import CollectorMetrics
from collector.output import InfluxOutput
from collector.processing import BatchOutcome, Limits, ProcessorProcess, SparkplugIntake, topic_or_none
from collector.settings import CollectorSettings
from collector.sparkplug_checkpoint import CHECKPOINT_FILE
from collector.spool import Spool, SpooledBatch, SpoolFull
from collector.supervision import RetryLater, Supervisor
from pilot_core.broker_accounts import heartbeat_topic
from pilot_core.contract import PayloadError, parse_json
from pilot_core.live import CollectorHealth
from pilot_core.registry import DeviceRegistry
from pilot_core.sparkplug import map_problems
from pilot_core.validation import Rejection, RejectReason

log = logging.getLogger("pilot.collector")

DEAD_LETTER_ACK_TIMEOUT_S = 10.0


class InfluxUnreachable(InfluxError):
    """InfluxDB did not answer: the collector spools until it does."""


class DeadLettersUnconfirmed(RetryLater):
    """The broker did not confirm every dead letter of a batch: the batch is not done, and is tried again."""


@dataclass
class _Batch:
    """A validated batch on its way to being durable and acknowledged."""

    messages: list[Delivery]
    outcome: BatchOutcome
    refused: list[tuple[Delivery, Rejection]] | None = None  # once stored: the messages its dead letters are for
    spooled: bool = False


class Collector:
    def __init__(self, settings: CollectorSettings, registry: DeviceRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or load_registry(settings.devices_file, load_profiles(settings.profiles_dir))
        self.metrics = CollectorMetrics()
        self.influx = InfluxClient(settings.influx)
        self._queue: queue.SimpleQueue[tuple[list[Delivery], int]] = queue.SimpleQueue()  # a read, its bytes
        self._carry: list[Delivery] = []  # what the last batch left of a read: the next batch starts with it
        # One writer each, so the backlog needs no lock: the reader counts in, the worker counts out.
        self._queued = 0
        self._done = 0  # messages of batches handled, acknowledged or not
        self._queued_bytes = 0
        self._released_bytes = 0  # payload bytes of batches handled, acknowledged or not
        # Validated batches waiting for the writer: one, so that memory holds at most a batch more.
        self._validated: queue.Queue[tuple[list[Delivery], BatchOutcome] | None] = queue.Queue(maxsize=1)
        # What a stage holds, so that after a failure it starts again where it was.
        self._validating: list[Delivery] = []
        self._writing: _Batch | None = None
        self._abandoned = False  # a batch was left unacknowledged at shutdown: so is every one after it
        self._accepting = True
        self._store_checked = False  # pinged, and the database created where the server allows
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self.output = InfluxOutput(self.influx, self.metrics, self._abort)
        sparkplug = settings.sparkplug
        problems = map_problems(sparkplug.devices, self.registry) if sparkplug.enabled else []
        if problems:
            raise ValueError("invalid Sparkplug mapping: " + "; ".join(problems))
        self._state_ts = 0  # the timestamp of our Sparkplug STATE, the same in its will
        self.processor = ProcessorProcess(
            self.registry,
            Limits.from_settings(settings),
            SparkplugIntake(
                tuple(sparkplug.devices), sparkplug.rebirth_interval_s, settings.spool_dir / CHECKPOINT_FILE
            )
            if sparkplug.enabled
            else None,
        )
        self.spool = Spool(settings.spool_dir, settings.spool_quota_mb * 1024 * 1024)
        self._spooled = threading.Event()  # wakes the replayer
        self.metrics.watch_backlog(lambda: self.backlog)
        self.metrics.watch_spool(lambda: self.spool.pending, lambda: self.spool.bytes, self.spool.quota_bytes)
        # The collector publishes to itself: a connection that stays up while deliveries stop is found out.
        self.heartbeat_topic = heartbeat_topic(settings.client_id)
        subscriptions = [(settings.subscription, 1)]
        if sparkplug.enabled:
            subscriptions += [(topic_filter, 1) for topic_filter in sparkplug.subscriptions]
        if settings.watchdog_s:
            subscriptions.append((self.heartbeat_topic, 0))
        self._mqtt = IntakeConnection(
            settings.mqtt,
            settings.client_id,
            subscriptions,
            self._on_deliveries,
            session_expiry_s=settings.session_expiry_s,
            receive_maximum=settings.in_flight_limit,
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            on_session_lost=self._on_session_lost,
            session_marker=settings.spool_dir / "mqtt-session",
            hold=self._holding_enough,
            will=self._state_will if sparkplug.enabled else None,
        )
        # Each thread is supervised: an unexpected failure is logged, counted, and its work starts again.
        self.supervisor = Supervisor(self.metrics)
        self._worker = self.supervisor.thread("validate", self._validate, self._stopping)
        self._writer = self.supervisor.thread("write", self._write, self._abort)
        self._replayer = self.supervisor.thread("replay", self._replay, self._abort)
        self._last_heartbeat = time.monotonic()
        self._watchdog = self.supervisor.thread("watchdog", self._watch, self._stopping)
        self.metrics.watch_health(self._healthy)
        # Its own client, with a short timeout: a write stuck on a down InfluxDB must hold neither the batches'
        # connections nor a shutdown.
        health_influx = settings.influx.model_copy(
            update={"timeout_s": min(settings.influx.timeout_s, HEALTH_TIMEOUT_S)}
        )
        self.health = HealthReporter(
            InfluxClient(health_influx), settings.client_id, settings.health_interval_s, self._health_at
        )
        self._health_thread = self.supervisor.thread("health", lambda: self.health.run(self._abort), self._abort)

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
        self._writer.start()
        self._replayer.start()
        if self.settings.watchdog_s:
            self._watchdog.start()
        if self.settings.health_interval_s:
            self._health_thread.start()
        # A new session receives nothing published before its SUBACK: this returns once subscribed.
        self._mqtt.start()
        log.info(
            "collecting %s from %s as %r: %d devices, %d profiles",
            self.settings.subscription,
            self.settings.mqtt.address,
            self.settings.client_id,
            len(self.registry),
            len(self.registry.catalog),
        )
        sparkplug = self.settings.sparkplug
        if sparkplug.enabled:
            log.info(
                "Sparkplug B host %r: %s, %d mapped edge nodes and devices",
                sparkplug.host_id,
                ", ".join(sparkplug.subscriptions),
                len(sparkplug.devices),
            )

    def stop(self) -> None:
        """Flush what was received, acknowledge it, then disconnect."""
        if self._stopping.is_set():
            return
        self._accepting = False  # later deliveries stay unacknowledged and return next session
        self._stopping.set()
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        self._worker.join(self.settings.shutdown_timeout_s)
        self._writer.join(max(0.0, deadline - time.monotonic()))
        if self._writer.is_alive():
            log.error(
                "shutdown: InfluxDB did not take the last batch within %.0f s; it stays unacknowledged "
                "and the broker will deliver it again",
                self.settings.shutdown_timeout_s,
            )
            self._abort.set()
            self._writer.join(10)
        self._abort.set()  # the spool is durable: replaying stops here and resumes at the next start
        self._spooled.set()
        self._replayer.join(30)
        if self.settings.sparkplug.enabled and self._mqtt.connected:
            # Edge nodes that wait for a primary host start storing and forwarding now, not at a timeout.
            topic, payload = host_state(self.settings.sparkplug.host_id, False, self._state_ts)
            self._mqtt.publish(topic, payload, retain=True).wait(5.0)
        if self._health_thread.ident is not None:
            self._health_thread.join(HEALTH_TIMEOUT_S + 5)
        self.health.influx.close()
        self._mqtt.close()
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

    def _health_at(self, at_ms: int) -> CollectorHealth:
        return CollectorHealth(
            self.settings.client_id,
            at_ms,
            self.backlog,
            self.spool.pending,
            self.spool.bytes,
            self._mqtt.connected,
            self._healthy(),
        )

    def _healthy(self) -> bool:
        """Connected to the broker, every thread running, none failing."""
        return self._mqtt.connected and self.supervisor.all_alive() and not self.supervisor.failing

    @property
    def backlog(self) -> int:
        """Messages received and not yet acknowledged (nor given up on, to come again)."""
        return self._queued - self._done

    def _holding_enough(self) -> bool:
        """Whether to stop reading for now: three batches, counted in messages or in payload bytes, are here."""
        held_bytes = self._queued_bytes - self._released_bytes
        return self.backlog >= self.settings.in_flight_limit or held_bytes >= 3 * self.settings.batch_max_bytes

    # --- MQTT callbacks (the reader thread: keep them cheap) ------------------

    def _state_will(self) -> tuple[str, bytes]:
        """Our Sparkplug STATE will for the next connection: offline, with the timestamp its online will carry."""
        self._state_ts = max(int(time.time() * 1000), self._state_ts + 1)
        return host_state(self.settings.sparkplug.host_id, False, self._state_ts)

    def _on_connect(self, session_present: bool) -> None:
        if self.settings.sparkplug.enabled:  # subscribed already: the SUBSCRIBE went with the CONNECT
            topic, payload = host_state(self.settings.sparkplug.host_id, True, self._state_ts)
            self._mqtt.publish(topic, payload, retain=True)
        self.metrics.connected.set(1)
        self._last_heartbeat = time.monotonic()
        log.info("connected to MQTT broker (session present: %s)", session_present)

    def _on_disconnect(self, reason: str) -> None:
        self.metrics.connected.set(0)
        if not self._stopping.is_set():
            log.warning("disconnected from MQTT broker (%s); reconnecting", reason)

    def _on_session_lost(self, kind: str, what: str) -> None:
        self.metrics.sessions_lost.labels(kind).inc()
        log.error("MQTT SESSION LOST (%s): %s", kind.replace("_", " "), what)

    def _on_deliveries(self, deliveries: list[Delivery]) -> None:
        if self.settings.watchdog_s:
            heartbeat = self.heartbeat_topic
            if any(d.topic == heartbeat for d in deliveries):
                self._last_heartbeat = time.monotonic()
                deliveries = [d for d in deliveries if d.topic != heartbeat]
                if not deliveries:
                    return
        if self.settings.sparkplug.enabled:
            try:
                self._answer_offline_state(deliveries)
            except Exception:  # before the queue: a failure here would reconnect, and be sent the same again
                log.exception("could not answer our Sparkplug STATE; the deliveries are taken in all the same")
        if self._accepting:  # once stopping, deliveries stay unacknowledged and return next session
            size = sum(len(d.payload) for d in deliveries)
            self._queued += len(deliveries)
            self._queued_bytes += size
            self._queue.put((deliveries, size))

    def _answer_offline_state(self, deliveries: list[Delivery]) -> None:
        """Our STATE said offline while we are connected (an old session's will, someone else): say online again,
        as Sparkplug 3.0 asks of a host, so that edge nodes waiting for us do not store and forward for nothing."""
        own = self.settings.sparkplug.state_topic
        for delivery in deliveries:
            if delivery.topic != own or self._stopping.is_set():
                continue
            try:  # read as any payload is: anything may be published here, retained
                online = parse_json(delivery.payload).get("online")
            except (PayloadError, AttributeError):
                online = None
            if online is not True:
                log.warning(
                    "our Sparkplug STATE read %r while we are online: publishing online again", delivery.payload
                )
                topic, payload = host_state(self.settings.sparkplug.host_id, True, self._state_ts)
                self._mqtt.publish(topic, payload, retain=True)

    def _watch(self) -> None:
        """Publish a heartbeat to ourselves; if none comes back for ``watchdog_s``, reconnect."""
        period = self.settings.watchdog_s
        while not self._stopping.wait(period / 4):
            self.supervisor.recovered("watchdog")
            if not self._mqtt.connected:
                self._last_heartbeat = time.monotonic()  # the reader is reconnecting already
                continue
            self._mqtt.publish(self.heartbeat_topic, b"", qos=0)
            silent_s = time.monotonic() - self._last_heartbeat
            if silent_s > period:
                log.error(
                    "connected to the broker but nothing delivered for %.0f s, not even our own heartbeat: "
                    "reconnecting (and subscribing again)",
                    silent_s,
                )
                self.metrics.watchdog_reconnects.inc()
                self._last_heartbeat = time.monotonic()
                # Cut the connection and let the reader reconnect (and subscribe again): reconnecting
                # from this thread would race it, and two CONNECTs for one client id confuse the broker.
                self._mqtt.cut()

    # --- worker ----------------------------------------------------------

    def _validate(self) -> None:
        """The first stage: batches in arrival order, validated and encoded, handed to the writer."""
        while True:
            batch = self._validating or self._take_batch()
            if not batch:
                if self._stopping.is_set() and not self._carry:
                    break
                continue
            self._validating = batch
            outcome = self._validated_outcome(batch)
            if outcome is None:  # stopping, and it failed: it stays unacknowledged and comes again next session
                self._finished(batch)
            else:
                self._request_rebirths(outcome)
                self._validated.put((batch, outcome))
            self._validating = []
        self._validated.put(None)  # the writer stops after what is queued

    def _validated_outcome(self, batch: list[Delivery]) -> BatchOutcome | None:
        """Validate ``batch``, trying again with backoff if the child fails; None if it failed and we are stopping."""
        while True:
            try:
                outcome = self.processor.process([(m.topic, m.payload) for m in batch])
            except Exception as exc:  # the child died or failed: a new one validates the batch again
                self.metrics.batches.labels("error").inc()
                delay = self.supervisor.failed("validate", exc, f"validating a batch of {len(batch)} messages")
                if self._stopping.is_set() or self._stopping.wait(delay):
                    return None
                continue
            self.supervisor.recovered("validate")
            return outcome

    def _request_rebirths(self, outcome: BatchOutcome) -> None:
        """Ask edge nodes for their births at once (QoS 0, as Sparkplug commands go): they need not be durable."""
        for group, edge_node in outcome.rebirths:
            topic, payload = rebirth_command(group, edge_node, int(time.time() * 1000))
            self._mqtt.publish(topic, payload, qos=0)
            self.metrics.sparkplug_rebirths.inc()
            log.warning("asked Sparkplug edge node %s/%s for a rebirth", group, edge_node)

    def _write(self) -> None:
        """The second stage: each validated batch made durable and acknowledged, in order; failures retried."""
        while True:
            if self._writing is None:
                item = self._validated.get()
                if item is None:
                    return
                messages, outcome = item
                self._count(len(messages), outcome)
                self._writing = _Batch(messages, outcome)
            batch = self._writing
            if self._abandoned:
                self.metrics.batches.labels("abandoned").inc()
            else:
                self._write_until_done(batch)
            self._writing = None
            self._finished(batch.messages)

    def _write_until_done(self, batch: _Batch) -> None:
        """Make ``batch`` durable and acknowledge it, retrying with backoff; give up only when stopping."""
        while True:
            try:
                if self._handle(batch):
                    self.supervisor.recovered("write")
                    return
                why = "InfluxDB had not taken it when the shutdown timeout ran out"
            except Exception as exc:  # never let one batch kill the collector: it is retried
                outcome = "dead_letter_failed" if isinstance(exc, DeadLettersUnconfirmed) else "error"
                self.metrics.batches.labels(outcome).inc()
                delay = self.supervisor.failed("write", exc, f"a batch of {len(batch.messages)} messages")
                if not self._stopping.wait(delay):  # a shutdown gives up on it at once
                    continue
                why = "it failed, and the collector is stopping"
            # Later batches may hold this one's messages delivered again, judged duplicates: none is acknowledged.
            log.warning(
                "a batch of %d messages is left unacknowledged (%s), and so is every one after it;"
                " the broker delivers them again next session",
                len(batch.messages),
                why,
            )
            self._abandoned = True
            self.metrics.batches.labels("abandoned").inc()
            return

    def _finished(self, batch: list[Delivery]) -> None:
        self._released_bytes += sum(len(d.payload) for d in batch)
        self._done += len(batch)

    def _take_batch(self) -> list[Delivery]:
        """Up to ``batch_size`` messages or ``batch_max_bytes`` of payload, whichever comes first."""
        size, max_bytes = self.settings.batch_size, self.settings.batch_max_bytes
        batch, self._carry = self._carry, []
        batch_bytes = sum(len(d.payload) for d in batch)
        if not batch:
            try:
                batch, batch_bytes = self._queue.get(timeout=0.2)
            except queue.Empty:
                return []
        deadline = time.monotonic() + self.settings.flush_interval_s
        while len(batch) < size and batch_bytes < max_bytes:
            try:
                more, more_bytes = self._queue.get_nowait()
            except queue.Empty:
                if self._stopping.is_set():
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    more, more_bytes = self._queue.get(timeout=min(remaining, 0.05))
                except queue.Empty:
                    continue
            batch.extend(more)  # the reader's lists are ours once queued
            batch_bytes += more_bytes
        if len(batch) > size or batch_bytes > max_bytes:
            cut = _cut(batch, size, max_bytes)
            batch, self._carry = batch[:cut], batch[cut:]
        return batch

    def _handle(self, batch: _Batch) -> bool:
        """Make ``batch`` durable and acknowledge it: True once done, False if the shutdown came first.

        Raises on a failure, and is called again: what is done already (the points stored) is not done twice.
        """
        if batch.refused is None and not self._store(batch):
            return False
        if not self._dead_letter(batch.refused or []):
            raise DeadLettersUnconfirmed(
                f"the broker did not confirm every dead letter of a batch of {len(batch.messages)} messages:"
                " it stays unacknowledged, and its dead letters are sent again"
            )
        if batch.outcome.checkpoint is not None:
            # The Sparkplug host state as of this batch, kept once the batch is durable and before it is
            # acknowledged: killed in between, its messages come again and find their seq and timestamps seen.
            self.processor.commit(batch.outcome.checkpoint)
        self._acknowledge(batch.messages)
        self.metrics.batches.labels("spooled" if batch.spooled else "written").inc()
        return True

    def _store(self, batch: _Batch) -> bool:
        """Write ``batch`` to InfluxDB, or append it to the spool; False if the shutdown came first."""
        messages, outcome = batch.messages, batch.outcome
        # While the spool holds batches, new ones queue behind them, so InfluxDB gets them in order.
        if (self.spool.pending or not self._store_ready()) and self._spool(batch):
            return True
        report = self.output.write(outcome.lines, give_up_after_s=self.settings.spool_after_s)
        # The spool refused it (at its quota, its disk full): InfluxDB is tried again, and the spool after each
        # further spool_after_s, so that a disk freed meanwhile takes the batch without waiting for InfluxDB.
        while report.deferred:
            if self._spool(batch):
                return True
            report = self.output.write(outcome.lines, give_up_after_s=self.settings.spool_after_s)
        if not report.completed:
            return False
        self.metrics.points_written.inc(report.written)
        refused = [(messages[i], rejection) for i, rejection in outcome.rejected]
        refused += self._refused_by_store(messages, outcome, report.refused)
        self._count_refused(refused)
        batch.refused = refused
        return True

    def _spool(self, batch: _Batch) -> bool:
        """Make the batch durable on disk; False if the spool is full or its disk failed."""
        messages, outcome = batch.messages, batch.outcome
        owners = sorted(set(outcome.line_owner))
        index = {owner: n for n, owner in enumerate(owners)}
        spooled = SpooledBatch(
            outcome.lines,
            [index[owner] for owner in outcome.line_owner],
            [(messages[owner].topic, messages[owner].payload) for owner in owners],
        )
        try:
            self.spool.append(spooled)
        except SpoolFull as full:
            log.error("%s: this batch waits in memory, unacknowledged, for InfluxDB or room in the spool", full)
            self.metrics.batches.labels("spool_full").inc()
            return False
        except OSError as exc:  # a full or failing disk: the spool is as if full for this batch
            log.error(
                "could not append to the spool at %s (%s): this batch waits in memory, unacknowledged, for InfluxDB or"
                " the spool",
                self.settings.spool_dir,
                exc,
            )
            self.metrics.batches.labels("spool_failed").inc()
            return False
        self._spooled.set()
        batch.spooled = True
        batch.refused = [(messages[i], rejection) for i, rejection in outcome.rejected]
        self._count_refused(batch.refused)
        return True

    def _replay(self) -> None:
        """Write spooled batches to InfluxDB in order, each dropped from the spool once written.

        A failure (dead letters not confirmed, the spool's disk full when moving past a record) raises: the
        supervisor logs and counts it and starts this again after a backoff, at the oldest record not yet
        moved past; writing a record twice is harmless.
        """
        while not self._abort.is_set():
            record = self.spool.peek()
            if record is None:
                self.supervisor.recovered("replay")
                self._spooled.wait(1.0)
                self._spooled.clear()
                continue
            if not self._store_ready():
                self._abort.wait(1.0)
                continue
            report = self.output.write(record.batch.lines)
            if not report.completed:
                return  # stopping: the record stays in the spool for the next start
            refused = self._refused_spooled(record.batch, report.refused)
            self._count_refused(refused)
            if not self._dead_letter(refused):
                raise DeadLettersUnconfirmed("the broker did not confirm the dead letters of a spooled batch")
            self.spool.commit(record)
            self.supervisor.recovered("replay")
            self.metrics.points_written.inc(report.written)
            self.metrics.batches.labels("replayed").inc()
            if not self.spool.pending:
                log.info("spool drained: every spooled batch is in InfluxDB")

    @staticmethod
    def _refused_spooled(batch: SpooledBatch, refused_lines: list[tuple[int, str]]) -> list[tuple[Delivery, Rejection]]:
        owners: dict[int, str] = {}
        for line_index, message in refused_lines:
            owners.setdefault(batch.line_owner[line_index], message)
        refused = []
        for owner, message in owners.items():
            topic, payload = batch.messages[owner]
            inbound = Delivery(topic, payload, 0, 0, -1)  # already acknowledged when spooled
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
        self.metrics.sparkplug_historical.inc(outcome.historical_points)
        self.metrics.sparkplug_stale_deaths.inc(outcome.stale_deaths)
        self.metrics.sparkplug_ignored_metrics.inc(outcome.ignored_metrics)

    @staticmethod
    def _refused_by_store(
        messages: list[Delivery], outcome: BatchOutcome, refused_lines: list[tuple[int, str]]
    ) -> list[tuple[Delivery, Rejection]]:
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

    def _count_refused(self, refused: list[tuple[Delivery, Rejection]]) -> None:
        for inbound, rejection in refused:
            self.metrics.rejected.labels(rejection.reason.value).inc()
            self.health.refused(rejection)
            log.info("refused %s: %s: %s", inbound.topic, rejection.reason.value, rejection.detail)

    def _dead_letter(self, refused: list[tuple[Delivery, Rejection]]) -> bool:
        """Publish each refused message to the dead-letter topic; True once the broker has stored them all."""
        publications = []
        for inbound, rejection in refused:
            payload = dead_letter_payload(inbound.topic, inbound.payload, rejection, self.settings.client_id)
            topic = dead_letter_topic(self.settings.dead_letter_topic, rejection)
            publications.append(self._mqtt.publish(topic, payload))
        stored = True
        deadline = time.monotonic() + DEAD_LETTER_ACK_TIMEOUT_S
        for (inbound, _), publication in zip(refused, publications, strict=True):
            if not publication.wait(max(0.0, deadline - time.monotonic())):
                stored = False
                log.error(
                    "the dead letter of %s was not stored (%s): the message stays unacknowledged; if the broker"
                    " refused it, let this collector's account write %s/#",
                    inbound.topic,
                    publication.refusal,
                    self.settings.dead_letter_topic,
                )
        return stored

    def _acknowledge(self, messages: list[Delivery]) -> None:
        self._mqtt.acknowledge(messages)


def _cut(batch: list[Delivery], size: int, max_bytes: int) -> int:
    """How many of ``batch`` fit ``size`` messages and ``max_bytes`` of payload; at least one."""
    total = 0
    for count, delivery in enumerate(batch[:size], 1):
        total += len(delivery.payload)
        if total >= max_bytes:
            return count
    return min(len(batch), size)
