"""The host-wide slot registry of LXC containers, without LXC: names and addresses stay unique
across data dirs, come back when freed, each data dir's host service ports are kept, and every
change reaches the isolation table."""

from __future__ import annotations

import fcntl
import ipaddress
import json
import multiprocessing
import os
from pathlib import Path

import pytest

from zlh.backends.base import BackendError
from zlh.backends.lxc.net import Bridge
from zlh.backends.lxc.slots import NAME_PREFIX, HostNetwork, Slot, SlotRegistry

BRIDGE = Bridge("lxcbr0", ipaddress.IPv4Interface("10.0.3.1/24"))
# Numbers no interface on a test machine has (a live zlh<n> port keeps a slot in use).
VMID = 7771


def container(lxcpath: Path, vmid: int) -> Path:
    """What the registry checks a container by: its LXC config."""
    config = lxcpath / f"{NAME_PREFIX}{vmid}" / "config"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("# test\n")
    return config


@pytest.fixture
def registry(tmp_path: Path) -> SlotRegistry:
    return SlotRegistry(tmp_path / "registry" / "lxc-slots.json")


def test_one_vmid_in_two_data_dirs_gets_distinct_ports_macs_and_addresses(
    registry: SlotRegistry, tmp_path: Path
) -> None:
    first, second = tmp_path / "a" / "lxc", tmp_path / "b" / "lxc"
    container(first, VMID), container(second, VMID)
    a = registry.claim(first, VMID, BRIDGE)
    b = registry.claim(second, VMID, BRIDGE)
    assert (a.number, a.veth) == (VMID, f"zlh{VMID}")  # a single instance keeps zlh<vmid>
    assert a.veth != b.veth and a.mac != b.mac and a.address != b.address
    assert a.address == "10.0.3.2" and b.address == "10.0.3.3"
    assert registry.claim(first, VMID, BRIDGE) == a  # claiming again changes nothing
    assert sorted(registry.all(), key=lambda s: s.number) == sorted([a, b], key=lambda s: s.number)


def test_the_mac_and_port_name_follow_the_slot_number() -> None:
    slot = Slot(0x0A0B0C, "/x", 1, "lxcbr0", "10.0.3.2")
    assert slot.mac == "00:16:3e:0a:0b:0c"
    assert slot.veth == "zlh658188" and len(slot.veth) <= 15


def test_released_names_and_addresses_come_back(registry: SlotRegistry, tmp_path: Path) -> None:
    lxcpath = tmp_path / "lxc"
    for vmid in (VMID, VMID + 1):
        container(lxcpath, vmid)
    first = registry.claim(lxcpath, VMID, BRIDGE)
    registry.claim(lxcpath, VMID + 1, BRIDGE)
    assert registry.release(lxcpath, VMID) == first
    assert registry.release(lxcpath, VMID) is None
    again = registry.claim(lxcpath, VMID, BRIDGE)
    assert (again.number, again.address) == (first.number, first.address)


def test_slots_of_containers_deleted_by_hand_are_dropped(
    registry: SlotRegistry, tmp_path: Path
) -> None:
    gone = tmp_path / "gone" / "lxc"
    config = container(gone, VMID)
    slot = registry.claim(gone, VMID, BRIDGE)
    config.unlink()
    kept = tmp_path / "kept" / "lxc"
    container(kept, VMID)
    assert registry.claim(kept, VMID, BRIDGE).address == slot.address
    assert [s.lxcpath for s in registry.all()] == [str(kept)]


def test_an_adopted_container_keeps_its_names_unless_another_holds_them(
    registry: SlotRegistry, tmp_path: Path
) -> None:
    old, other = tmp_path / "old" / "lxc", tmp_path / "other" / "lxc"
    container(old, VMID), container(old, VMID + 1), container(other, VMID)
    kept = registry.claim(old, VMID, BRIDGE, number=VMID + 50, address="10.0.3.77")
    assert (kept.number, kept.address) == (VMID + 50, "10.0.3.77")
    clash = registry.claim(other, VMID, BRIDGE, number=VMID + 50, address="10.0.3.77")
    assert clash.number != VMID + 50 and clash.address != "10.0.3.77"
    foreign = registry.claim(old, VMID + 1, BRIDGE, address="192.168.9.9")  # not on the bridge
    assert ipaddress.IPv4Address(foreign.address) in BRIDGE.network


def test_a_full_bridge_network_is_a_clear_error(tmp_path: Path) -> None:
    small = Bridge("lxcbr0", ipaddress.IPv4Interface("10.0.3.1/30"))  # one address left
    registry = SlotRegistry(tmp_path / "lxc-slots.json")
    lxcpath = tmp_path / "lxc"
    container(lxcpath, VMID), container(lxcpath, VMID + 1)
    assert registry.claim(lxcpath, VMID, small).address == "10.0.3.2"
    with pytest.raises(BackendError, match="no free address left on lxcbr0"):
        registry.claim(lxcpath, VMID + 1, small)
    assert [s.vmid for s in registry.all()] == [VMID]


def test_every_change_is_told_under_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "lxc-slots.json"
    told: list[list[int]] = []

    def on_change(network: HostNetwork) -> None:
        fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):  # held by the registry right now
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        told.append(sorted(s.vmid for s in network.slots))

    registry = SlotRegistry(path, on_change=on_change)
    lxcpath = tmp_path / "lxc"
    container(lxcpath, VMID), container(lxcpath, VMID + 1)
    registry.claim(lxcpath, VMID, BRIDGE)
    registry.claim(lxcpath, VMID, BRIDGE)  # no change: not told
    registry.claim(lxcpath, VMID + 1, BRIDGE)
    registry.release(lxcpath, VMID)
    registry.sync()
    (lxcpath / f"{NAME_PREFIX}{VMID + 1}" / "config").unlink()  # deleted by hand
    registry.sync()  # drops it: told once
    assert told == [[VMID], [VMID, VMID + 1], [VMID + 1], [VMID + 1], []]


def test_an_unreadable_registry_is_an_error_and_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "lxc-slots.json"
    path.write_text("{not json")
    lxcpath = tmp_path / "lxc"
    container(lxcpath, VMID)
    with pytest.raises(BackendError, match=f"registry {path} is unreadable"):
        SlotRegistry(path).claim(lxcpath, VMID, BRIDGE)
    assert path.read_text() == "{not json"


def _claim_many(path: str, lxcpath: str, count: int) -> None:
    registry = SlotRegistry(Path(path))
    for vmid in range(VMID, VMID + count):
        registry.claim(Path(lxcpath), vmid, BRIDGE)


def test_two_processes_claiming_at_once_never_share_a_name_or_address(tmp_path: Path) -> None:
    path = tmp_path / "lxc-slots.json"
    lxcpaths = [tmp_path / "a" / "lxc", tmp_path / "b" / "lxc"]
    count = 25
    for lxcpath in lxcpaths:
        for vmid in range(VMID, VMID + count):
            container(lxcpath, vmid)
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_claim_many, args=(str(path), str(lxcpath), count))
        for lxcpath in lxcpaths
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    slots = SlotRegistry(path).all()
    assert len(slots) == 2 * count
    assert len({s.number for s in slots}) == len({s.address for s in slots}) == 2 * count


def test_each_data_dir_registers_its_host_ports_and_the_table_gets_them_all(
    tmp_path: Path,
) -> None:
    told: list[list[int]] = []
    registry = SlotRegistry(
        tmp_path / "lxc-slots.json", on_change=lambda n: told.append(n.service_ports)
    )
    first, second = tmp_path / "a" / "lxc", tmp_path / "b" / "lxc"
    first.mkdir(parents=True), second.mkdir(parents=True)
    registry.serve(first, [8080, 8080])
    registry.serve(second, [9090, 443])
    registry.serve(second, [443, 9090])  # the same set: nothing to tell
    assert told == [[8080], [443, 8080, 9090]]
    registry.serve(first, [])  # none left for it
    assert told[-1] == [443, 9090]
    assert registry.read().services == {str(second): [443, 9090]}
    with pytest.raises(BackendError, match="70000 is not a TCP port"):
        registry.serve(first, [8080, 70000])
    assert registry.read().services == {str(second): [443, 9090]}


def test_the_ports_of_a_deleted_data_dir_are_dropped(tmp_path: Path) -> None:
    registry = SlotRegistry(tmp_path / "lxc-slots.json")
    gone, kept = tmp_path / "gone" / "lxc", tmp_path / "kept" / "lxc"
    gone.mkdir(parents=True), kept.mkdir(parents=True)
    registry.serve(gone, [8080])
    registry.serve(kept, [9090])
    gone.rmdir()
    registry.sync()
    assert registry.read().service_ports == [9090]


def test_a_registry_from_before_service_ports_loads_with_none(tmp_path: Path) -> None:
    path = tmp_path / "lxc-slots.json"
    lxcpath = tmp_path / "lxc"
    container(lxcpath, VMID)
    slot = {"number": VMID, "lxcpath": str(lxcpath), "vmid": VMID, "bridge": "lxcbr0"}
    path.write_text(json.dumps({"slots": [{**slot, "address": "10.0.3.9"}]}))
    registry = SlotRegistry(path)
    assert registry.read() == HostNetwork([Slot(**slot, address="10.0.3.9")], {})
    registry.serve(lxcpath, [8080])
    saved = json.loads(path.read_text())
    assert saved["services"] == {str(lxcpath): [8080]} and len(saved["slots"]) == 1
