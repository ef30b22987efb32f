"""The one pydantic base every wire model uses: camelCase on the wire, snake_case in Python."""

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class WireModel(BaseModel):
    """Strict wire model: unknown fields are refused so a typo never passes silently."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        extra="forbid",
        frozen=True,
    )


# Serialization context key that makes SecretStr fields dump in clear
# (ProvisionPayload.json_with_secrets).
REVEAL_SECRETS = "reveal_secrets"
