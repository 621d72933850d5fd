"""Subscribing to an OPC UA server's variables, and starting over whenever the connection is lost.

``run`` connects, creates a session, one subscription and a monitored item per source item, then
delivers data changes until the connection is lost, when it raises ``SourceUnreachable``. The caller
runs it again: each run builds the client, the session, the subscription and every monitored item anew.
Nothing relies on the library restoring a session, which is how peers went silent for good after a
server restart. An item the server does not know (its node id vanished, a browse path that leads
nowhere) is that item's fault; the rest are subscribed as usual.

Timestamps: a value's SourceTimestamp where the server gives one, else its ServerTimestamp, else the
time the agent received it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import Client, Node, ua
from asyncua.crypto import uacrypto
from cryptography import x509

from adapters.sources import ItemFault, ItemValue, SourceUnreachable
from pilot_core.signals import SignalValue
from pilot_core.source_map import OpcUaEndpoint, OpcUaItem, SecurityMode

_KEEP_ALIVE_COUNT = 3  # publishing intervals without news before the server sends a keep-alive


def _epoch_ms(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _signal(value: Any) -> SignalValue | None:
    """A variable's value as a signal; None for what is not a number or a bit (a string, an array)."""
    if isinstance(value, bool | int | float):
        return value
    return None


class _Changes:
    """The subscription's handler: data changes to ItemValues, a lost subscription to the lost event.

    asyncua calls it in the event loop, so it delivers and reports at once."""

    def __init__(
        self,
        items_by_handle: dict[int, OpcUaItem],
        deliver: Callable[[ItemValue], None],
        report: Callable[[ItemFault], None],
        lost: asyncio.Event,
    ) -> None:
        self.items_by_handle = items_by_handle
        self.deliver = deliver
        self.report = report
        self.lost = lost

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        item = self.items_by_handle.get(data.monitored_item.ClientHandle)
        if item is None:
            return
        value = data.monitored_item.Value
        if value.StatusCode is not None and not value.StatusCode.is_good():
            self.report(ItemFault(item.name, "bad_status", f"{_where(item)}: {value.StatusCode.name}"))
            return
        signal = _signal(val)
        if signal is None:
            self.report(ItemFault(item.name, "not_a_number", f"{_where(item)}: {type(val).__name__} {val!r}"))
            return
        ts = _epoch_ms(value.SourceTimestamp) or _epoch_ms(value.ServerTimestamp) or int(time.time() * 1000)
        self.deliver(ItemValue(item.name, signal, ts))

    def status_change_notification(self, status: Any) -> None:
        self.lost.set()  # the server ended the subscription (BadTimeout, BadShutdown): start over


async def _application_uri(certificate: str) -> str | None:
    loaded = await uacrypto.load_certificate(certificate)
    try:
        names = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def _where(item: OpcUaItem) -> str:
    return item.node if item.node is not None else f"browse path {item.browse_path}"


class OpcUaReader:
    def __init__(self, endpoint: OpcUaEndpoint, items: Sequence[OpcUaItem]) -> None:
        self.endpoint = endpoint
        self.items = list(items)

    @property
    def address(self) -> str:
        return self.endpoint.endpoint

    async def _client(self) -> Client:
        client = Client(self.endpoint.endpoint, timeout=self.endpoint.timeout_s, auto_reconnect=False)
        endpoint = self.endpoint
        if endpoint.security_mode is not SecurityMode.NONE:
            assert endpoint.certificate is not None  # the source map requires it with a security mode
            # The server checks the application URI the client gives against its certificate's: give that one.
            client.application_uri = await _application_uri(endpoint.certificate) or client.application_uri
            await client.set_security_string(
                f"{endpoint.security_policy},{endpoint.security_mode.value},{endpoint.certificate},{endpoint.private_key}"
            )
        if endpoint.username is not None:
            client.set_user(endpoint.username)
            if endpoint.password_env is not None:
                client.set_password(os.environ.get(endpoint.password_env, ""))
        if endpoint.user_certificate is not None and endpoint.user_private_key is not None:
            await client.load_client_certificate(endpoint.user_certificate)
            await client.load_private_key(Path(endpoint.user_private_key))
        return client

    async def _connected(self) -> Client:
        client = await self._client()
        try:
            await client.connect()
        except (OSError, TimeoutError, ua.UaError) as exc:
            raise SourceUnreachable(f"{self.address}: {exc or type(exc).__name__}") from None
        return client

    async def _nodes(self, client: Client) -> tuple[dict[str, Node], list[ItemFault]]:
        """Each item's node; a browse path that leads nowhere is that item's fault."""
        nodes, faults = {}, []
        for item in self.items:
            if item.node is not None:
                try:
                    nodes[item.name] = client.get_node(item.node)
                except (ValueError, ua.UaError) as exc:
                    faults.append(ItemFault(item.name, "bad_node_id", f"{item.node}: {exc}"))
                continue
            assert item.browse_path is not None
            try:
                nodes[item.name] = await client.nodes.objects.get_child(item.browse_path.split("/"))
            except ua.UaStatusCodeError as exc:
                faults.append(ItemFault(item.name, "bad_browse_path", f"browse path {item.browse_path}: {exc}"))
        return nodes, faults

    async def run(self, deliver: Callable[[ItemValue], None], report: Callable[[ItemFault], None]) -> None:
        """Deliver data changes until the connection is lost; then raise SourceUnreachable."""
        client = await self._connected()
        try:
            nodes, faults = await self._nodes(client)
            for fault in faults:
                report(fault)
            by_handle = {}
            requests = []
            for handle, item in enumerate(self.items, start=1):
                node = nodes.get(item.name)
                if node is None:
                    continue
                by_handle[handle] = item
                requests.append(self._request(handle, item, node))
            lost = asyncio.Event()  # the connection, or the subscription, is gone
            changes = _Changes(by_handle, deliver, report, lost)

            async def on_lost(exc: Exception) -> None:
                lost.set()

            client.connection_lost_callback = on_lost
            parameters = ua.CreateSubscriptionParameters(
                RequestedPublishingInterval=self.endpoint.publishing_interval_ms,
                RequestedMaxKeepAliveCount=_KEEP_ALIVE_COUNT,
                RequestedLifetimeCount=_KEEP_ALIVE_COUNT * 10,
                PublishingEnabled=True,
            )
            subscription = await client.create_subscription(parameters, changes)
            if requests:
                results = await subscription.create_monitored_items(requests)
                for request, result in zip(requests, results, strict=True):
                    if isinstance(result, ua.StatusCode):
                        item = by_handle.pop(request.RequestedParameters.ClientHandle)
                        report(ItemFault(item.name, "bad_node_id", f"{_where(item)}: {result.name}"))
            await lost.wait()
            raise SourceUnreachable(f"{self.address}: the connection or its subscription was lost")
        except (OSError, TimeoutError, ua.UaError) as exc:
            raise SourceUnreachable(f"{self.address}: {exc or type(exc).__name__}") from None
        finally:
            await _quietly_disconnect(client)

    def _request(self, handle: int, item: OpcUaItem, node: Node) -> ua.MonitoredItemCreateRequest:
        parameters = ua.MonitoringParameters()
        parameters.ClientHandle = handle
        sampling = item.sampling_interval_ms
        parameters.SamplingInterval = self.endpoint.sampling_interval_ms if sampling is None else sampling
        parameters.QueueSize = item.queue_size
        parameters.DiscardOldest = True
        if item.deadband is not None:
            deadband = ua.DataChangeFilter()
            deadband.Trigger = ua.DataChangeTrigger.StatusValue
            deadband.DeadbandType = ua.DeadbandType.Absolute
            deadband.DeadbandValue = item.deadband
            parameters.Filter = deadband
        request = ua.MonitoredItemCreateRequest()
        request.ItemToMonitor = ua.ReadValueId(NodeId=node.nodeid, AttributeId=ua.AttributeIds.Value)
        request.MonitoringMode = ua.MonitoringMode.Reporting
        request.RequestedParameters = parameters
        return request

    async def read_once(self) -> tuple[list[ItemValue], list[ItemFault]]:
        """Every item's value now (``pilot agent --check``)."""
        client = await self._connected()
        try:
            nodes, faults = await self._nodes(client)
            values = []
            for item in self.items:
                node = nodes.get(item.name)
                if node is None:
                    continue
                try:
                    value = await node.read_data_value()
                except ua.UaStatusCodeError as exc:
                    faults.append(ItemFault(item.name, "bad_node_id", f"{_where(item)}: {exc}"))
                    continue
                signal = _signal(value.Value.Value if value.Value is not None else None)
                if signal is None:
                    faults.append(ItemFault(item.name, "not_a_number", f"{_where(item)}: {value.Value!r}"))
                    continue
                ts = _epoch_ms(value.SourceTimestamp) or _epoch_ms(value.ServerTimestamp) or int(time.time() * 1000)
                values.append(ItemValue(item.name, signal, ts))
            return values, faults
        except (OSError, TimeoutError, ua.UaError) as exc:
            raise SourceUnreachable(f"{self.address}: {exc or type(exc).__name__}") from None
        finally:
            await _quietly_disconnect(client)


async def _quietly_disconnect(client: Client) -> None:
    with contextlib.suppress(OSError, TimeoutError, ua.UaError):  # the server is gone already: no goodbye
        await asyncio.wait_for(client.disconnect(), timeout=2)
