"""One thread for the MQTT traffic of many agents, and one that (re)connects them.

Each agent (device) keeps its own MQTT connection, since its birth and last will are its own, but a
process reading fifty machines need not run fifty network threads: paho's external loop (``loop_read``,
``loop_write``, ``loop_misc`` on ``client.socket()``) lets one thread wait on every connection with a
selector. The same thread commits the agents' grouped outbox (one sync to disk for what several devices
recorded in the last few tens of milliseconds) and then publishes what the commit made durable.
Connecting blocks (a TCP connect, a TLS handshake), so it runs in a second thread, which hands a
connected client over to the network thread; a client is driven by one of the two at a time.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_agent.agent import Agent
    from edge_agent.outbox import Outbox

log = logging.getLogger("pilot.agent")

COMMIT_EVERY_S = 0.05  # how long a grouped outbox's writes wait for others before one sync takes them all
MISC_EVERY_S = 1.0  # keep-alive pings, and a sweep of what the broker acknowledged
RETRY_MIN_S, RETRY_MAX_S = 1.0, 10.0  # between attempts to reach the broker, doubling until it accepts


class AgentNetwork:
    def __init__(self, commit_every_s: float = COMMIT_EVERY_S) -> None:
        self.commit_every_s = commit_every_s
        self._selector = selectors.DefaultSelector()
        self._waker, self._wake_end = socket.socketpair()
        self._waker.setblocking(False)
        self._wake_end.setblocking(False)
        self._selector.register(self._waker, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._signalled = False
        self._due: set[Agent] = set()  # agents with news: a message recorded, a PUBACK, a connection
        self._held: set[Agent] = set()  # due, but their outbox's writes are not committed yet
        self._adopted: list[Agent] = []  # connected by the connector, for the network thread to drive
        self._calls: list[Callable[[], None]] = []
        self._sockets: dict[Agent, tuple[object, int]] = {}  # the socket registered, and its events
        self._outboxes: list[Outbox] = []  # grouped outboxes this thread commits
        self._connect_queue: list[tuple[float, int, Agent]] = []
        self._order = itertools.count()
        self._delays: dict[Agent, float] = {}
        self._connect_ready = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pilot-agent-network", daemon=True)
        self._connector = threading.Thread(target=self._connect_all, name="pilot-agent-connector", daemon=True)

    # --- from any thread ----------------------------------------------------

    def add(self, agent: Agent) -> None:
        """Drive ``agent``'s client from now on (its ``connect_async`` already called): connect it now."""
        with self._lock:
            if agent.outbox.grouped and agent.outbox not in self._outboxes:
                self._outboxes.append(agent.outbox)
        if not self._thread.is_alive():
            self._thread.start()
            self._connector.start()
        self._connect_later(agent, 0.0)

    def wake(self, agent: Agent) -> None:
        """``agent`` has news (a message recorded, a PUBACK): the network thread pumps it soon."""
        with self._lock:
            self._due.add(agent)
            if self._signalled or threading.current_thread() is self._thread:
                return
            self._signalled = True
        self._signal()

    def call(self, work: Callable[[], None], timeout_s: float = 10.0) -> None:
        """Run ``work`` in the network thread (which alone drives a connected client) and wait for it."""
        if not self._thread.is_alive():
            work()
            return
        done = threading.Event()

        def run() -> None:
            try:
                work()
            finally:
                done.set()

        with self._lock:
            self._calls.append(run)
            self._signalled = True
        self._signal()
        done.wait(timeout_s)

    def close(self) -> None:
        self._stopping.set()
        with self._connect_ready:
            self._connect_ready.notify_all()
        self._signal()
        for thread in (self._thread, self._connector):
            if thread.is_alive():
                thread.join(10)
        self._selector.close()
        self._waker.close()
        self._wake_end.close()

    def _signal(self) -> None:
        with contextlib.suppress(OSError):  # already full of wake-ups (BlockingIOError), or closed while stopping
            self._wake_end.send(b"x")

    # --- the connector ------------------------------------------------------

    def _connect_later(self, agent: Agent, delay_s: float) -> None:
        with self._connect_ready:
            heapq.heappush(self._connect_queue, (time.monotonic() + delay_s, next(self._order), agent))
            self._connect_ready.notify()

    def _connect_all(self) -> None:
        while not self._stopping.is_set():
            with self._connect_ready:
                if not self._connect_queue:
                    self._connect_ready.wait(1.0)
                    continue
                due, _, agent = self._connect_queue[0]
                wait_s = due - time.monotonic()
                if wait_s > 0:
                    self._connect_ready.wait(min(wait_s, 1.0))
                    continue
                heapq.heappop(self._connect_queue)
            if agent.stopping:
                continue
            try:
                agent.client.reconnect()
            except (OSError, ValueError) as exc:  # refused, unreachable, TLS: try again later, less often
                delay = self._longer_delay(agent)
                log.debug("%s: broker not reached (%s); again in %.0f s", agent.name, exc, delay)
                self._connect_later(agent, delay)
                continue
            with self._lock:
                self._adopted.append(agent)
                self._signalled = True
            self._signal()

    def _longer_delay(self, agent: Agent) -> float:
        delay = min(self._delays.get(agent, RETRY_MIN_S / 2) * 2, RETRY_MAX_S)
        self._delays[agent] = delay
        return delay

    def accepted(self, agent: Agent) -> None:
        """The broker accepted ``agent`` (its CONNACK): the next loss is retried quickly again."""
        self._delays.pop(agent, None)

    # --- the network thread -------------------------------------------------

    def _run(self) -> None:
        next_misc = time.monotonic() + MISC_EVERY_S
        while not self._stopping.is_set():
            timeout = max(0.0, next_misc - time.monotonic())
            for outbox in self._outboxes:
                opened = outbox.open_since
                if opened is not None:
                    timeout = min(timeout, max(0.0, opened + self.commit_every_s - time.monotonic()))
            if self._held:
                timeout = min(timeout, self.commit_every_s)
            for key, events in self._selector.select(timeout):
                agent = key.data
                if agent is None:
                    self._drain_waker()
                    continue
                if events & selectors.EVENT_READ:
                    agent.client.loop_read()
                if events & selectors.EVENT_WRITE and agent in self._sockets:
                    agent.client.loop_write()
                self._watch(agent)
            with self._lock:
                due, self._due = self._due, set()
                adopted, self._adopted = self._adopted, []
                calls, self._calls = self._calls, []
                self._signalled = False
            for agent in adopted:
                if agent.stopping:  # it stopped while the connector was connecting it: say goodbye now
                    agent.client.disconnect()
                self._watch(agent)
            for work in calls:
                work()
            for agent in list(self._sockets) if calls else ():
                self._watch(agent)  # a call may have closed a connection (a goodbye)
            now = time.monotonic()
            sweep = now >= next_misc
            if sweep:
                next_misc = now + MISC_EVERY_S
                for agent in list(self._sockets):
                    agent.client.loop_misc()  # keep-alive: a ping, or noticing the broker is gone
                    self._watch(agent)
                due.update(self._sockets)
            committed = set()
            for outbox in self._outboxes:
                opened = outbox.open_since
                if opened is not None and now - opened >= self.commit_every_s:
                    outbox.commit()
                    committed.add(id(outbox))
            due |= self._held
            self._held = set()
            for agent in due:
                outbox = agent.outbox
                if outbox.grouped and outbox.open_since is not None and id(outbox) not in committed:
                    self._held.add(agent)  # what it recorded is not durable yet: after the commit
                    continue
                agent.pump(sweep)
                if agent in self._sockets:
                    self._watch(agent)

    def _drain_waker(self) -> None:
        try:
            while self._waker.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _watch(self, agent: Agent) -> None:
        """Follow ``agent``'s socket: read always, write while paho has bytes to send; a socket paho closed
        is forgotten and the agent connects again (unless it is stopping)."""
        sock = agent.client.socket()
        registered = self._sockets.get(agent)
        if registered is not None and registered[0] is not sock:
            self._selector.unregister(registered[0])  # type: ignore[arg-type]
            del self._sockets[agent]
            registered = None
            if not agent.stopping:  # lost, or refused at its CONNECT (a wrong password): less often each time
                self._connect_later(agent, self._longer_delay(agent))
        if sock is None:
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if agent.client.want_write() else 0)
        if registered is None:
            self._selector.register(sock, events, agent)
        elif registered[1] != events:
            self._selector.modify(sock, events, agent)
        self._sockets[agent] = (sock, events)
