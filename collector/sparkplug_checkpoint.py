"""The Sparkplug host's state on disk: the JSON checkpoint, and the one migration of the pickle before it.

The checkpoint is ``SparkplugHost.snapshot()``'s versioned JSON, replaced whole after each durable batch.
A file that cannot be read (damaged, cut short, another version) never stops the collector: it starts
without births, and each edge node is asked for a rebirth at its next message (``SparkplugHost.handle``),
which is how a Sparkplug host recovers what it does not know.

Earlier versions pickled the state to ``sparkplug-host.pickle``. That file is read once, by an unpickler
that can build only the handful of plain data classes the state was made of (no other class or function,
so a tampered file cannot run code), converted to JSON, checked like any checkpoint, and then deleted.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

from collector.spool import replace_durably
from pilot_core.sparkplug import HostStateError, SparkplugHost

log = logging.getLogger("pilot.collector")

CHECKPOINT_FILE = "sparkplug-host.json"
PICKLE_FILE = "sparkplug-host.pickle"  # written by versions before the JSON checkpoint

# The classes the pickled state held, and nothing else: whatever else a pickle names is refused unbuilt.
_PICKLED_CLASSES = frozenset(
    {
        ("pilot_core.sparkplug", "_Node"),
        ("pilot_core.sparkplug", "_Birth"),
        ("pilot_core.sparkplug", "_Derivation"),
        ("pilot_core.registry", "DeviceKey"),
        ("pilot_core.signals", "StateDebouncer"),
        ("pilot_core.signals", "ProductionCounters"),
        ("pilot_core.signals", "CounterTracker"),
        ("pilot_core.signals", "CounterSpec"),
        ("pilot_core.signals", "CounterRole"),
    }
)


def save(path: Path, snapshot: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The rename must survive a power loss too: an older state after acknowledged batches would count their
    # counters' parts again.
    replace_durably(path, snapshot)


def load(host: SparkplugHost, path: Path) -> None:
    """Carry ``host`` on from the checkpoint at ``path`` (or the old pickle beside it); on any problem, log it
    and leave ``host`` fresh."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        _migrate(host, path.with_name(PICKLE_FILE), path)
        return
    except OSError as exc:
        _start_fresh(path, f"cannot be read ({exc})")
        return
    try:
        host.restore(data)
    except HostStateError as exc:
        _start_fresh(path, str(exc))


def _start_fresh(path: Path, why: str) -> None:
    log.warning(
        "Sparkplug host state %s: %s. Starting without births: each edge node is asked for a rebirth at its next"
        " message, and its messages until then are dead-lettered",
        path,
        why,
    )


class _StateUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> type:
        if (module, name) not in _PICKLED_CLASSES:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a Sparkplug host state")
        found: type = super().find_class(module, name)
        return found


def _migrate(host: SparkplugHost, pickled: Path, checkpoint: Path) -> None:
    try:
        with open(pickled, "rb") as file:
            old = _StateUnpickler(file).load()
    except FileNotFoundError:
        return
    except Exception as exc:  # a tampered or damaged pickle, whatever it raises
        _start_fresh(pickled, f"the old pickled state cannot be migrated ({type(exc).__name__}: {exc}); ignored")
        return
    try:
        converter = SparkplugHost(host.registry)
        converter.nodes, converter.derivations = old["nodes"], old["derivations"]
        snapshot = converter.snapshot()
        host.restore(snapshot)  # checked as any checkpoint is
    except Exception as exc:  # not the state it claims to be
        _start_fresh(pickled, f"the old pickled state cannot be migrated ({type(exc).__name__}: {exc}); ignored")
        return
    try:
        save(checkpoint, snapshot)
        pickled.unlink()
    except OSError as exc:  # carried on from it all the same; the next durable batch writes the JSON
        log.warning("Sparkplug host state: could not finish migrating %s (%s)", pickled, exc)
        return
    log.info("Sparkplug host state migrated from %s to %s", pickled, checkpoint)
