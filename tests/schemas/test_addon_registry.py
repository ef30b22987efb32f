"""The addon registry: every addon name is checked against it wherever one arrives."""

from __future__ import annotations

import typing
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from zlh.schemas import (
    ADDONS,
    AddonSpec,
    Catalog,
    ProvisionPayload,
    UnknownAddon,
    addon_type,
    validation_problems,
)

ART = {"url": "a.tar.gz", "sha256": "0" * 64, "size": 1, "format": "tar.gz"}
REFUSED = "unknown addon 'jupyter' (known: code-server, tailscale)"


def problems(model: Any, data: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return [f"{p.field}: {p.detail}" for p in validation_problems(info.value)]


def test_each_entry_is_the_spec_its_name_selects() -> None:
    (union, _discriminator) = typing.get_args(AddonSpec)
    assert typing.get_args(union) == tuple(addon.spec for addon in ADDONS.values())
    for name, addon in ADDONS.items():
        assert addon.name == name
        assert typing.get_args(addon.spec.model_fields["name"].annotation) == (name,)
        assert addon.spec.model_fields["options"].annotation is addon.options
        assert addon_type(name) is addon


def test_an_unknown_addon_in_a_payload_is_refused_naming_it() -> None:
    data = {
        "vmid": 101,
        "runtime": {"name": "node", "version": "22", "artifact": ART},
        "addons": [{"name": "jupyter", "version": "1", "artifact": ART, "options": {}}],
    }
    (problem,) = problems(ProvisionPayload, data)
    assert problem.startswith("addons.0") and "'jupyter'" in problem


def test_an_unknown_addon_in_a_catalog_is_refused_naming_it() -> None:
    entry = {"default": "1", "versions": [{"version": "1", "artifact": ART}]}
    data = {"schemaVersion": 1, "addons": {"code-server": entry, "jupyter": entry}}
    (problem,) = problems(Catalog, data)
    assert problem.startswith("addons.jupyter") and REFUSED in problem


def test_an_unknown_addon_name_has_no_entry() -> None:
    with pytest.raises(UnknownAddon) as info:
        addon_type("jupyter")
    assert info.value.message == REFUSED


def test_the_catalogs_schema_lists_the_registered_names() -> None:
    schema = TypeAdapter(Catalog).json_schema()
    assert schema["properties"]["addons"]["propertyNames"]["enum"] == list(ADDONS)
