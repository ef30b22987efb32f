"""Every addon the platform knows, in one registry: ``ADDONS``, name → :class:`AddonType`.

An entry holds what each side needs of that addon: the payload models (its spec and options),
the port it listens on inside the container, its service dir (``/opt/zlh/services/<dir>``) and
the agent class that runs it. The payload's discriminated union, the catalog's and the dev
request's addon names, the agent's ``make_addon`` and the API's payload building all read it, so
a name it lacks is refused everywhere, naming it.

The agent class is named by string (``module:Class`` inside ``zlh.agent.addons``) and resolved
only by the agent: the schemas import no agent code, and the API never loads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, Generic, Literal, TypeVar, Union

from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    SerializationInfo,
    WithJsonSchema,
    field_serializer,
)
from pydantic_core import PydanticCustomError

from zlh.ports import CODE_SERVER_PORT
from zlh.schemas._base import REVEAL_SECRETS, WireModel
from zlh.schemas.artifact import Artifact, Version

__all__ = [
    "ADDONS",
    "AddonName",
    "AddonSpec",
    "AddonSpecBase",
    "AddonType",
    "CodeServerAddon",
    "CodeServerOptions",
    "TailscaleAddon",
    "TailscaleOptions",
    "UnknownAddon",
    "addon_type",
    "registered_addon",
    "tailnet_addon",
]

OptionsT = TypeVar("OptionsT", bound=WireModel)


class CodeServerOptions(WireModel):
    base_path: str = Field(pattern=r"^/dev/[0-9]+/ide$")
    port: int = Field(default=CODE_SERVER_PORT, ge=1, le=65535)


class TailscaleOptions(WireModel):
    login_server: str = Field(pattern=r"^https?://")
    # The container's pre-auth key: a secret, never logged, never shown by repr, masked in
    # every dump but ProvisionPayload.json_with_secrets.
    auth_key: SecretStr
    hostname: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")

    @field_serializer("auth_key")
    def _auth_key(self, value: SecretStr, info: SerializationInfo) -> str | SecretStr:
        return value.get_secret_value() if (info.context or {}).get(REVEAL_SECRETS) else value


class AddonSpecBase(WireModel, Generic[OptionsT]):
    """One addon of a payload: what every addon has; each subclass pins ``name`` to its own."""

    name: str
    version: Version
    artifact: Artifact
    options: OptionsT


class CodeServerAddon(AddonSpecBase[CodeServerOptions]):
    name: Literal["code-server"]


class TailscaleAddon(AddonSpecBase[TailscaleOptions]):
    name: Literal["tailscale"]


SpecT = TypeVar("SpecT", bound=AddonSpecBase[Any])


@dataclass(frozen=True)
class AddonType(Generic[SpecT, OptionsT]):
    """One kind of addon, as the API, the agent and the artifact tools know it."""

    name: str
    spec: type[SpecT]
    options: type[OptionsT]
    # The agent's class for it: "module:Class" inside zlh.agent.addons.
    agent_class: str
    # Installed at /opt/zlh/services/<service_dir>.
    service_dir: str
    # The port it listens on inside the container, if it serves one.
    port: int | None = None
    # The container needs /dev/net/tun for it.
    needs_tun: bool = False
    # The API fills in its options from the platform's tailnet, so it needs one configured.
    needs_tailnet: bool = False

    def build(self, *, version: str, artifact: Artifact, options: OptionsT) -> SpecT:
        """This addon's payload entry."""
        return self.spec(name=self.name, version=version, artifact=artifact, options=options)


ADDONS: Mapping[str, AddonType[Any, Any]] = MappingProxyType(
    {
        addon.name: addon
        for addon in (
            AddonType(
                name="code-server",
                spec=CodeServerAddon,
                options=CodeServerOptions,
                agent_class="code_server:CodeServer",
                service_dir="code-server",
                port=CODE_SERVER_PORT,
            ),
            AddonType(
                name="tailscale",
                spec=TailscaleAddon,
                options=TailscaleOptions,
                agent_class="tailscale:Tailscale",
                service_dir="tailscale",
                needs_tun=True,
                needs_tailnet=True,
            ),
        )
    }
)


class UnknownAddon(LookupError):
    """A name the registry does not have; the message names it and the known ones."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown addon {name!r} (known: {', '.join(ADDONS)})")
        self.message = str(self.args[0])


def addon_type(name: str) -> AddonType[Any, Any]:
    """The registry's entry for ``name``, or :class:`UnknownAddon`."""
    try:
        return ADDONS[name]
    except KeyError:
        raise UnknownAddon(name) from None


def tailnet_addon(names: Iterable[str]) -> str | None:
    """The first of ``names`` whose options come from the platform's tailnet, if any."""
    return next((name for name in names if addon_type(name).needs_tailnet), None)


def registered_addon(name: str) -> str:
    """``name`` if the registry has it; else a validation error naming it."""
    if name not in ADDONS:
        # The message goes in as context: a template would read braces in the name.
        raise PydanticCustomError(
            "unknown_addon", "{message}", {"message": UnknownAddon(name).message}
        )
    return name


# An addon name as the catalog and a dev request carry it: one the registry has.
AddonName = Annotated[
    str,
    AfterValidator(registered_addon),
    WithJsonSchema({"type": "string", "enum": list(ADDONS)}),
]

if TYPE_CHECKING:
    AddonSpec = AddonSpecBase[Any]
else:
    # The payload's addon entry: one of the registry's specs, told apart by ``name``.
    AddonSpec = Annotated[
        Union[tuple(addon.spec for addon in ADDONS.values())],  # noqa: UP007
        Field(discriminator="name"),
    ]
