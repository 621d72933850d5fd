"""One agent process reading many machines: its CPU share of one core and its memory.

    python -m bench.sources                      # 25 Modbus TCP and 25 OPC UA devices, 1 s sampling, 60 s
    python -m bench.sources --modbus 5 --opcua 5 --seconds 20 --install-size --out sources.json

The machines are pymodbus and asyncua servers in a separate process (their cost is not the agent's),
their values changing every second: a current, a part counter, a state. The agent is `pilot-agent` with a
source map of them all, publishing to a private Mosquitto. After a warm-up, the agent's CPU time (user +
system, from /proc) over the measured window, its resident memory at the end and its peak, and its
threads. ``--install-size`` also builds a virtual environment with `pip install '.[agent]'` and measures it.
Not a test: it measures, and prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def source_map(modbus_ports: list[int], opcua_ports: list[int]) -> str:
    devices = []
    for index, port in enumerate(modbus_ports):
        devices.append(
            f"""  - site: bench
    line: L1
    device: conveyor-{index:03d}
    profile: conveyor
    modbus: {{host: 127.0.0.1, port: {port}, poll_s: 1}}
    items:
      - {{name: current, table: input, address: 0, type: float32, metric: motor_current}}
      - {{name: boxes, table: holding, address: 10, type: uint16}}
      - {{name: jam, table: discrete, address: 0, metric: jam_detected}}
    state:
      rules:
        - {{state: running, when: {{current: {{above: 4.0}}}}, for_s: 2}}
        - {{state: idle, when: {{current: {{below: 0.5}}}}, for_s: 2}}
    production: {{product: BOX, counters: {{produced: {{item: boxes}}}}}}
"""
        )
    for index, port in enumerate(opcua_ports):
        devices.append(
            f"""  - site: bench
    line: L1
    device: cnc-{index:03d}
    profile: cnc_machine
    opcua: {{endpoint: "opc.tcp://127.0.0.1:{port}/bench/", publishing_interval_ms: 1000, sampling_interval_ms: 1000}}
    items:
      - {{name: state, node: "ns=2;s=CNC.RunState"}}
      - {{name: parts, node: "ns=2;s=CNC.PartCount"}}
      - {{name: spindle, node: "ns=2;s=CNC.SpindleSpeed", metric: spindle_speed}}
    state: {{item: state, map: {{0: idle, 1: cutting}}}}
    production: {{product: SHAFT, counters: {{produced: {{item: parts, bits: 32}}}}}}
"""
        )
    return "outbox: outbox\ndevices:\n" + "".join(devices)


async def serve(modbus_ports: list[int], opcua_ports: list[int]) -> None:
    """The machines: every second each counts a part, and every 10 s each switches running and idle.

    A port taken meanwhile by another process (starting 25 OPC UA servers takes a while) is replaced by
    another free one: the ports served are printed with ``ready``."""
    from asyncua import Server, ua  # noqa: PLC0415 - only the server process needs them
    from pymodbus.server import ModbusTcpServer  # noqa: PLC0415
    from pymodbus.simulator import DataType, SimData, SimDevice  # noqa: PLC0415

    from adapters import local_services  # noqa: PLC0415

    async def modbus_on(port: int) -> ModbusTcpServer:
        bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
        registers = [SimData(0, count=16, values=0, datatype=DataType.REGISTERS)]
        device = SimDevice(id=1, simdata=(bits, bits, registers, registers))
        modbus_server = ModbusTcpServer([device], address=("127.0.0.1", port))
        await modbus_server.serve_forever(background=True)
        return modbus_server

    async def opcua_on(port: int) -> tuple[Any, Any, Any]:
        opcua_server = Server()
        await opcua_server.init()
        opcua_server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bench/")
        opcua_server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        ns = await opcua_server.register_namespace("urn:pilot-telemetry:bench")
        cnc = await opcua_server.nodes.objects.add_object(f"ns={ns};s=CNC", f"{ns}:CNC")
        state = await cnc.add_variable(f"ns={ns};s=CNC.RunState", f"{ns}:RunState", ua.Variant(0, ua.VariantType.Int32))
        parts = await cnc.add_variable(
            f"ns={ns};s=CNC.PartCount", f"{ns}:PartCount", ua.Variant(0, ua.VariantType.UInt32)
        )
        spindle = await cnc.add_variable(f"ns={ns};s=CNC.SpindleSpeed", f"{ns}:SpindleSpeed", 0.0)
        await opcua_server.start()
        return state, parts, spindle

    async def on_a_free_port(ports: list[int], index: int, start: Any) -> Any:
        for _ in range(10):
            try:
                return await start(ports[index])
            except OSError:  # the port was taken since it was picked
                ports[index] = local_services.free_port()
        raise RuntimeError("no free port for a machine's server")

    modbus = [await on_a_free_port(modbus_ports, i, modbus_on) for i in range(len(modbus_ports))]
    opcua = [await on_a_free_port(opcua_ports, i, opcua_on) for i in range(len(opcua_ports))]
    print("ready", json.dumps([modbus_ports, opcua_ports]), flush=True)
    tick = 0
    while True:
        await asyncio.sleep(1)
        tick += 1
        running = (tick // 10) % 2 == 0
        amps = struct.unpack(">HH", struct.pack(">f", 6.0 if running else 0.1))
        for modbus_server in modbus:
            await modbus_server.context.async_setValues(1, 4, 0, list(amps))
            await modbus_server.context.async_setValues(1, 3, 10, [tick % 65_536])
        for state, parts, spindle in opcua:
            await state.write_value(ua.Variant(1 if running else 0, ua.VariantType.Int32))
            await parts.write_value(ua.Variant(tick, ua.VariantType.UInt32))
            await spindle.write_value(8000.0 if running else 0.0)


def cpu_seconds(pid: int) -> float:
    user, system = cpu_split(pid)
    return user + system


def cpu_split(pid: int) -> tuple[float, float]:
    """The process's CPU seconds so far: (user, system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS_PER_S, int(fields[12]) / TICKS_PER_S  # utime, stime


# The agent's modules alone, before any device: the floor under its RSS, whatever the number of devices.
_IMPORT_FLOOR = (
    "import pilot.agent_cli, edge_agent.sources, adapters.sources.modbus, adapters.sources.opcua\n"
    "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS:')))"
)


def import_floor_mb() -> float:
    shown = subprocess.run([sys.executable, "-c", _IMPORT_FLOOR], cwd=ROOT, capture_output=True, text=True, check=True)
    return round(int(shown.stdout.split()[-1]) / 1024, 1)


def provenance() -> dict[str, Any]:
    """Which code was measured, when, and how busy the machine was: the page names them."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "cores": os.cpu_count(),
    }


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def install_size_mb(work: Path) -> float:
    venv = work / "agent-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{ROOT}[agent]"], check=True)
    return sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from adapters import local_services  # noqa: PLC0415 - keeps --help fast

    began = provenance()
    modbus_ports = [local_services.free_port() for _ in range(args.modbus)]
    opcua_ports = [local_services.free_port() for _ in range(args.opcua)]
    broker = local_services.mosquitto(work / "mosquitto")
    broker.start()
    machines = subprocess.Popen(
        [sys.executable, "-m", "bench.sources", "--serve", json.dumps([modbus_ports, opcua_ports])],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    agent: subprocess.Popen[bytes] | None = None
    try:
        assert machines.stdout is not None
        ready = machines.stdout.readline().split(" ", 1)
        if ready[0].strip() != "ready":
            raise RuntimeError("the machines' servers did not start")
        modbus_ports, opcua_ports = json.loads(ready[1])
        (work / "agent.yaml").write_text(source_map(modbus_ports, opcua_ports), encoding="utf-8")
        environment = {**os.environ, "PILOT_MQTT__HOST": "127.0.0.1", "PILOT_MQTT__PORT": str(broker.port)}
        agent = subprocess.Popen(
            [str(Path(sys.executable).parent / "pilot-agent"), str(work / "agent.yaml")],
            cwd=work,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(args.warm_up)
        (user_0, system_0), start = cpu_split(agent.pid), time.monotonic()
        time.sleep(args.seconds)
        (user_1, system_1), elapsed = cpu_split(agent.pid), time.monotonic() - start
        used = user_1 - user_0 + system_1 - system_0
        result = {
            **began,
            "devices": {"modbus": args.modbus, "opcua": args.opcua},
            "sampling_s": 1.0,
            "measured_s": round(elapsed, 1),
            "cpu_share_of_one_core": round(used / elapsed, 4),
            "cpu_system_share": round((system_1 - system_0) / used, 3) if used else None,
            "rss_mb": round(status_kb(agent.pid, "VmRSS") / 1024, 1),
            "peak_rss_mb": round(status_kb(agent.pid, "VmHWM") / 1024, 1),
            "threads": status_kb(agent.pid, "Threads"),
            "import_floor_rss_mb": import_floor_mb(),
            "agent_exit": agent.poll(),  # None: still running, as it should be
        }
    finally:
        for process in (agent, machines):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
        broker.stop()
    if args.install_size:
        result["agent_install_mb"] = round(install_size_mb(work), 1)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sources", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modbus", type=int, default=25, help="Modbus TCP devices (default 25)")
    parser.add_argument("--opcua", type=int, default=25, help="OPC UA devices (default 25)")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window (default 60)")
    parser.add_argument("--warm-up", type=float, default=15.0, help="seconds before measuring (default 15)")
    parser.add_argument("--install-size", action="store_true", help="also measure a '.[agent]' virtual environment")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # the machines' process: [modbus ports, opcua ports]
    args = parser.parse_args(argv)
    if args.modbus < 0 or args.opcua < 0 or args.modbus + args.opcua < 1 or args.seconds <= 0:
        parser.error("give at least one device and a positive --seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        modbus_ports, opcua_ports = json.loads(args.serve)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        asyncio.run(serve(modbus_ports, opcua_ports))
        return 0
    work = Path(tempfile.mkdtemp(prefix="pilot-bench-sources-"))
    try:
        result = measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
