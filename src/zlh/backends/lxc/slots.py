"""Host-wide network slots of LXC containers: one registry for every zlh data dir on the host.

A container's bridge port (host-side veth ``zlh<slot>``), its MAC and its static address are
host-wide names: every data dir's containers sit on the same bridge and behind the same
isolation table. Two ``zlh up`` instances on one host (staging and production, two operators)
therefore take them from one registry, ``/var/lib/zlh/lxc-slots.json``, under an exclusive
``flock``; each container of each data dir holds one :class:`Slot` from its creation to its
destruction.

- A new container gets its vmid as slot number when no other container on the host holds it
  (so single-instance hosts keep the ``zlh<vmid>`` names), else the lowest free number, and the
  lowest address of the bridge's network no container on the host holds.
- Containers created before the registry existed are adopted from their LXC config, keeping
  their names and address when no other container holds them.
- Entries whose container is gone (its data dir deleted by hand) are dropped on the next
  change, so their names and addresses come back. A container being rebuilt has no config for
  a moment (its old clone is destroyed before the new one is made): its rebuild directory
  (:func:`rebuild_dir`, which holds its home meanwhile) keeps its slot.

The registry also holds, per LXC path, the host's TCP ports its containers must reach (the
instance's artifact server, a Headscale on the host): the isolation table lets containers
reach those ports on the host and no others, and it is host-wide, so it needs every instance's.

Whatever follows the registry (the isolation table) is told of every change while the lock is
still held (``on_change``), so two instances changing it at once cannot load stale tables.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from zlh.atomic import write_atomically
from zlh.backends.base import BackendError
from zlh.backends.lxc.net import Bridge, allocate_address, file_lock

__all__ = ["NAME_PREFIX", "REGISTRY", "HostNetwork", "Slot", "SlotRegistry", "rebuild_dir"]

NAME_PREFIX = "zlh-"  # a container's LXC name is NAME_PREFIX + vmid

REGISTRY = Path("/var/lib/zlh/lxc-slots.json")
# Slot numbers end up in a MAC (24 bits) and an interface name (15 bytes: "zlh" + 8 digits).
MAX_SLOT = (1 << 24) - 1


def rebuild_dir(lxcpath: Path, vmid: int) -> Path:
    """Where a rebuild keeps container ``vmid``'s home until its new system is made: beside
    the container's directory (which the rebuild destroys and clones anew), on its file system."""
    return lxcpath / f".{NAME_PREFIX}{vmid}.rebuild"


@dataclass(frozen=True)
class Slot:
    """Container ``vmid`` of the LXC path ``lxcpath`` and its host-wide network names."""

    number: int
    lxcpath: str
    vmid: int
    bridge: str
    address: str

    @property
    def veth(self) -> str:
        """The host side of the container's veth pair: fixed, so the rules can name it."""
        return f"zlh{self.number}"

    @property
    def mac(self) -> str:
        """A stable locally administered MAC (LXC's 00:16:3e prefix)."""
        n = self.number
        return "00:16:3e:" + ":".join(f"{(n >> shift) & 0xFF:02x}" for shift in (16, 8, 0))


@dataclass
class HostNetwork:
    """Every container on the host (``slots``) and, per LXC path, the host's TCP ports its
    containers reach (``services``)."""

    slots: list[Slot] = field(default_factory=list)
    services: dict[str, list[int]] = field(default_factory=dict)

    @property
    def service_ports(self) -> list[int]:
        """The host's ports any container may reach (the table cannot tell data dirs apart)."""
        return sorted({port for ports in self.services.values() for port in ports})

    def copy(self) -> HostNetwork:
        return HostNetwork(list(self.slots), {k: list(v) for k, v in self.services.items()})


class SlotRegistry:
    def __init__(
        self, path: Path = REGISTRY, *, on_change: Callable[[HostNetwork], None] | None = None
    ) -> None:
        """``on_change(network)`` is called with every slot and service port on the host after
        each change, under the registry's lock."""
        self.path = path
        self._on_change = on_change

    def read(self) -> HostNetwork:
        """The registry as it is on disk, without the lock and changing nothing (for reports:
        ``zlh doctor``). Writers replace the file whole, so it is never read half-written."""
        return self._load()

    def all(self) -> list[Slot]:
        with self._locked() as network:
            return list(network.slots)

    def serve(self, lxcpath: Path, ports: Iterable[int]) -> None:
        """The host's TCP ``ports`` the containers of ``lxcpath`` reach, replacing the ones it
        had (none: they reach no host service but DNS and DHCP)."""
        wanted = sorted(set(ports))
        for port in wanted:
            if not 0 < port < 65536:
                raise BackendError(f"{port} is not a TCP port (1-65535)")
        with self._locked() as network:
            if wanted:
                network.services[str(lxcpath)] = wanted
            else:
                network.services.pop(str(lxcpath), None)

    def sync(self) -> None:
        """Call ``on_change`` with the current slots (to restore what follows the registry)."""
        with self._locked(notify=True):
            pass

    def get(self, lxcpath: Path, vmid: int) -> Slot | None:
        with self._locked() as network:
            return _find(network.slots, str(lxcpath), vmid)

    def claim(
        self,
        lxcpath: Path,
        vmid: int,
        bridge: Bridge,
        *,
        number: int | None = None,
        address: str | None = None,
    ) -> Slot:
        """The slot of ``vmid`` in ``lxcpath``, taken now if it has none. ``number`` and
        ``address`` are wishes (an adopted container's current names), kept when free."""
        with self._locked() as network:
            slots = network.slots
            found = _find(slots, str(lxcpath), vmid)
            if found is not None:
                return found
            numbers = {s.number for s in slots}
            wanted = number if number is not None else vmid
            if not 0 < wanted <= MAX_SLOT or wanted in numbers:
                wanted = next((n for n in range(1, MAX_SLOT + 1) if n not in numbers), 0)
                if not wanted:
                    raise BackendError(f"no free container slot left in {self.path}")
            taken = {s.address for s in slots}
            if address is None or address in taken or not _on(bridge, address):
                address = allocate_address(bridge, taken)
            slot = Slot(wanted, str(lxcpath), vmid, bridge.name, address)
            slots.append(slot)
            return slot

    def release(self, lxcpath: Path, vmid: int) -> Slot | None:
        """Give up ``vmid``'s slot (the container is destroyed); the released slot, if any:
        also when the lock's clean-up found it no longer in use and dropped it already (the
        container's config and bridge port gone), as it is once a destroy is done."""
        dropped: list[Slot] = []
        with self._locked(dropped=dropped) as network:
            found = _find(network.slots, str(lxcpath), vmid)
            if found is not None:
                network.slots.remove(found)
            return found or _find(dropped, str(lxcpath), vmid)

    @contextmanager
    def _locked(
        self, *, notify: bool = False, dropped: list[Slot] | None = None
    ) -> Iterator[HostNetwork]:
        """The registry under its lock, without what is gone (containers, data dirs: the slots
        of gone containers are added to ``dropped``); written back (atomically) if that or the
        caller changed it, and ``on_change`` told then (or always, with ``notify``)."""
        with file_lock(self.path.with_name(self.path.name + ".lock")):
            loaded = self._load()
            in_use = [s for s in loaded.slots if _in_use(s)]
            if dropped is not None:
                dropped.extend(s for s in loaded.slots if s not in in_use)
            network = HostNetwork(
                in_use,
                {k: v for k, v in loaded.services.items() if Path(k).is_dir()},
            )
            yield network
            changed = network != loaded
            if changed:
                self._save(network)
            if (changed or notify) and self._on_change is not None:
                self._on_change(network.copy())

    def _load(self) -> HostNetwork:
        try:
            data = json.loads(self.path.read_text())
            services: Mapping[str, list[int]] = data.get("services", {})
            return HostNetwork(
                [Slot(**entry) for entry in data["slots"]],
                {str(path): sorted(int(p) for p in ports) for path, ports in services.items()},
            )
        except FileNotFoundError:
            return HostNetwork()
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackendError(
                f"the container slot registry {self.path} is unreadable ({exc}); it names the "
                "bridge ports and addresses of every zlh container on this host: restore it, "
                "or move it away only when no zlh LXC container exists on this host"
            ) from exc

    def _save(self, network: HostNetwork) -> None:
        data = {
            "slots": [asdict(s) for s in sorted(network.slots, key=lambda s: s.number)],
            "services": dict(sorted(network.services.items())),
        }
        write_atomically(self.path, json.dumps(data, indent=1) + "\n", mode=0o600)


def _find(slots: Iterable[Slot], lxcpath: str, vmid: int) -> Slot | None:
    return next((s for s in slots if s.lxcpath == lxcpath and s.vmid == vmid), None)


def _in_use(slot: Slot) -> bool:
    """Whether the slot's container still exists: its LXC config, a rebuild under way, or its
    live bridge port."""
    lxcpath = Path(slot.lxcpath)
    return (
        (lxcpath / f"{NAME_PREFIX}{slot.vmid}" / "config").is_file()
        or rebuild_dir(lxcpath, slot.vmid).is_dir()
        or Path("/sys/class/net", slot.veth).exists()
    )


def _on(bridge: Bridge, address: str) -> bool:
    try:
        return ipaddress.IPv4Address(address) in bridge.network
    except ValueError:
        return False
