"""Real protocol servers for the agent's sources, each in a thread of its own: pymodbus's Modbus TCP server
and asyncua's OPC UA server. A test changes their values while they run, stops them and starts them again."""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from asyncua import Server, ua
from asyncua.crypto import uacrypto
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from snap7.server import Server as Snap7Server
from snap7.type import SrvArea

from adapters import local_services

T = TypeVar("T")
COIL, DISCRETE, HOLDING, INPUT = 1, 2, 3, 4  # the read function codes address the tables in the datastore


class _LoopThread:
    """An event loop running in its own thread, for a server the test drives from outside it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def close(self) -> None:
        self.call(_cancel_others())  # a server's leftover tasks (a session's timeout loop) end with it
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


async def _cancel_others() -> None:
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


class ModbusServer:
    """A Modbus TCP device (unit 1): 64 coils, discrete inputs, holding and input registers, all 0.

    Its values survive a stop and start, as a device's own memory does across a network outage.
    ``slow[(table, address)]`` (or ``slow_all``) seconds pass before a read starting there is answered: a
    register behind a slow gateway, or (every read slow) a device that hangs with its TCP port still open."""

    def __init__(self, unit: int = 1) -> None:
        self.port = local_services.free_port()
        self.unit = unit
        self._thread = _LoopThread("modbus-server")
        self._server: ModbusTcpServer | None = None
        self._values: dict[tuple[int, int], list[int] | list[bool]] = {}
        self.slow: dict[tuple[int, int], float] = {}
        self.slow_all = 0.0

    def start(self) -> None:
        async def start() -> ModbusTcpServer:
            bits = [SimData(0, count=64, values=False, datatype=DataType.BITS)]
            registers = [SimData(0, count=64, values=0, datatype=DataType.REGISTERS)]
            device = SimDevice(id=self.unit, simdata=(bits, bits, registers, registers))
            server = ModbusTcpServer([device], address=("127.0.0.1", self.port))
            read = server.context.async_getValues

            async def answer_slowly(device_id: int, table: int, address: int, count: int = 1) -> Any:
                delay = self.slow.get((table, address), self.slow_all)
                if delay:
                    await asyncio.sleep(delay)
                return await read(device_id, table, address, count)

            server.context.async_getValues = answer_slowly  # type: ignore[method-assign,assignment]
            await server.serve_forever(background=True)
            for (table, address), values in self._values.items():
                await server.context.async_setValues(self.unit, table, address, values)
            return server

        self._server = self._thread.call(start())

    def stop(self) -> None:
        if self._server is not None:
            self._thread.call(self._server.shutdown())
            self._server = None

    def close(self) -> None:
        self.stop()
        self._thread.close()

    def set(self, table: int, address: int, values: list[int] | list[bool]) -> None:
        """Write the device's memory (also while it is stopped: it has the values when it starts again)."""
        self._values[(table, address)] = values
        if self._server is not None:
            server = self._server
            self._thread.call(_checked(server.context.async_setValues(self.unit, table, address, values)))

    def set_float32(self, table: int, address: int, value: float) -> None:
        high, low = struct.unpack(">HH", struct.pack(">f", value))
        self.set(table, address, [high, low])


async def _checked(result: Awaitable[object]) -> None:
    problem = await result
    assert problem is None, f"the Modbus datastore refused the write: {problem}"


@dataclass(frozen=True)
class OpcUaSecurity:
    """A secured server's certificate and key, and who may connect: a user with a password, or the holder of a
    user certificate. The agent's own application certificate and key (for signing and encrypting) go with it."""

    server_certificate: Path
    server_key: Path
    username: str
    password: str
    user_certificate: Path
    user_key: Path
    agent_certificate: Path
    agent_key: Path


async def _opcua_certificate(folder: Path, name: str, uri: str, use: ObjectIdentifier) -> tuple[Path, Path]:
    certificate, key = folder / f"{name}.der", folder / f"{name}.pem"
    subject = {"countryName": "KR", "organizationName": "pilot-telemetry tests"}
    await setup_self_signed_certificate(key, certificate, uri, "127.0.0.1", [use], subject)
    return certificate, key


def make_opcua_security(folder: Path, username: str = "operator", password: str = "s3cret") -> OpcUaSecurity:
    """RSA certificates as OPC UA wants them (its application URI among the subject alternative names)."""
    folder.mkdir(parents=True, exist_ok=True)

    async def make() -> OpcUaSecurity:
        server = await _opcua_certificate(folder, "server", OpcUaServer.NAMESPACE, ExtendedKeyUsageOID.SERVER_AUTH)
        user = await _opcua_certificate(folder, "user", "urn:pilot-telemetry:operator", ExtendedKeyUsageOID.CLIENT_AUTH)
        agent = await _opcua_certificate(folder, "agent", "urn:pilot-telemetry:agent", ExtendedKeyUsageOID.CLIENT_AUTH)
        return OpcUaSecurity(*server, username, password, *user, *agent)

    return asyncio.run(make())


class _Users:
    """The server's user manager: the configured user with its password, or the user certificate; no one else."""

    def __init__(self, security: OpcUaSecurity) -> None:
        self.security = security
        self.user_certificate = security.user_certificate.read_bytes()  # DER

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        if username is not None:
            known = (username, password) == (self.security.username, self.security.password)
            return User(role=UserRole.User) if known else None
        if certificate is not None:  # the server gives the token's DER bytes (its signature checked)
            der = certificate if isinstance(certificate, bytes) else uacrypto.der_from_x509(certificate)
            return User(role=UserRole.User) if der == self.user_certificate else None
        return None


class OpcUaServer:
    """A CNC controller's address space: Objects/CNC with RunState, PartCount and SpindleSpeed.

    ``start(with_part_count=False)`` starts it again without the PartCount node: a node id that vanished.
    With ``security``, it offers Basic256Sha256 Sign and SignAndEncrypt only, to a user with its password or
    with its certificate."""

    NAMESPACE = "urn:pilot-telemetry:test-cnc"

    def __init__(self, security: OpcUaSecurity | None = None) -> None:
        self.security = security
        self.port = local_services.free_port()
        self.endpoint = f"opc.tcp://127.0.0.1:{self.port}/pilot/"
        self._thread = _LoopThread("opcua-server")
        self._server: Server | None = None
        self._variables: dict[str, Any] = {}
        self.values: dict[str, Any] = {
            "RunState": ua.Variant(0, ua.VariantType.Int32),
            "PartCount": ua.Variant(0, ua.VariantType.UInt32),
            "SpindleSpeed": ua.Variant(0.0, ua.VariantType.Double),
        }

    def start(self, with_part_count: bool = True) -> None:
        async def start() -> Server:
            security = self.security
            server = Server(user_manager=_Users(security) if security else None)  # type: ignore[arg-type]
            await server.init()
            server.set_endpoint(self.endpoint)
            if security is None:
                server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
            else:
                await server.load_certificate(str(security.server_certificate))
                await server.load_private_key(str(security.server_key))
                server.set_security_policy(
                    [ua.SecurityPolicyType.Basic256Sha256_Sign, ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]
                )
                server.set_identity_tokens([ua.UserNameIdentityToken, ua.X509IdentityToken])
            index = await server.register_namespace(self.NAMESPACE)
            cnc = await server.nodes.objects.add_object(f"ns={index};s=CNC", f"{index}:CNC")
            self._variables = {}
            for name, value in self.values.items():
                if name == "PartCount" and not with_part_count:
                    continue
                node_id = f"ns={index};s=CNC.{name}"
                self._variables[name] = await cnc.add_variable(node_id, f"{index}:{name}", value)
            await server.start()
            return server

        self._server = self._thread.call(start())

    def stop(self) -> None:
        if self._server is not None:
            self._thread.call(self._server.stop())
            self._server = None

    def close(self) -> None:
        self.stop()
        self._thread.close()

    def set(self, name: str, value: Any) -> None:
        self.values[name] = ua.Variant(value, self.values[name].VariantType)
        variable = self._variables.get(name)
        if self._server is not None and variable is not None:
            self._thread.call(variable.write_value(self.values[name]))


class S7Server:
    """An S7 PLC with one data block (DB10, 64 bytes) read by offset. Its memory survives a stop and start."""

    def __init__(self, db: int = 10) -> None:
        self.port = local_services.free_port()
        self.db = db
        self.memory = bytearray(64)
        self._server: Snap7Server | None = None

    def start(self) -> None:
        server = Snap7Server(log=False)
        server.register_area(SrvArea.DB, self.db, self.memory)
        server.start_to("127.0.0.1", tcp_port=self.port)
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server.destroy()
            self._server = None

    def set(self, offset: int, fmt: str, value: float | bool) -> None:
        """Write the data block at ``offset`` (struct format, big-endian as S7 stores it)."""
        struct.pack_into(">" + fmt, self.memory, offset, value)
