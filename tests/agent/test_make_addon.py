"""make_addon builds the class the registry names for each addon, and no other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zlh.agent.addons import addon_class, make_addon
from zlh.agent.addons.base import AddonContext
from zlh.agent.addons.code_server import CodeServer
from zlh.agent.addons.tailscale import Tailscale
from zlh.agent.config import AgentConfig
from zlh.agent.devuser import DevEnvironment
from zlh.agent.paths import Layout
from zlh.agent.runas import DevIdentity
from zlh.install.download import RetryPolicy
from zlh.install.installer import Installer
from zlh.schemas import ADDONS, AddonSpec, Artifact, ArtifactFormat, UnknownAddon

ARTIFACT = Artifact(url="a.tar.gz", sha256="0" * 64, size=1, format=ArtifactFormat.TAR_GZ)
OPTIONS: dict[str, dict[str, Any]] = {
    "code-server": {"basePath": "/dev/101/ide"},
    "tailscale": {"loginServer": "https://hs.example", "authKey": "hskey-1"},
}
EXPECTED = {"code-server": CodeServer, "tailscale": Tailscale}


def context(root: Path) -> AddonContext:
    home = root / "home" / "dev"
    dev = DevEnvironment("dev", DevIdentity.current(home=home), home, home / "workspace")
    return AddonContext(
        layout=Layout(root),
        config=AgentConfig(root=root, bind_host="127.0.0.1"),
        installer=Installer(policy=RetryPolicy()),
        dev=dev,
        vmid=101,
    )


def spec(name: str) -> AddonSpec:
    addon = ADDONS[name]
    options = addon.options.model_validate(OPTIONS[name])
    built: AddonSpec = addon.build(version="1", artifact=ARTIFACT, options=options)
    return built


def test_every_registered_addon_has_an_expected_class() -> None:
    assert set(EXPECTED) == set(ADDONS)


@pytest.mark.parametrize("name", sorted(ADDONS))
def test_make_addon_builds_the_registered_class(name: str, tmp_path: Path) -> None:
    addon = make_addon(spec(name), context(tmp_path))
    assert type(addon) is EXPECTED[name]
    assert addon.name == name
    assert addon.target == Layout(tmp_path).service(ADDONS[name].service_dir)


def test_an_unregistered_addon_has_no_class() -> None:
    with pytest.raises(UnknownAddon, match=r"unknown addon 'jupyter' \(known: code-server"):
        addon_class("jupyter")
