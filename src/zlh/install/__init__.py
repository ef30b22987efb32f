"""Verified, atomic installs of artifacts, shared by the agent and the host.

The agent installs a container's runtime and add-ons with it; the host builds its shared,
read-only layers (:mod:`zlh.layers`) with the same code, so a layer is byte for byte what the
agent would have installed, with the same completion marker the agent's guard reads.
"""

# Where installs go inside a container (the container contract, docs/architecture.md).
RUNTIMES_DIR = "/opt/zlh/runtimes"
SERVICES_DIR = "/opt/zlh/services"


def runtime_dir(name: str, version: str) -> str:
    """The container path of runtime ``name`` at ``version``."""
    return f"{RUNTIMES_DIR}/{name}/{version}"


def service_dir(name: str) -> str:
    """The container path of an add-on's service tree."""
    return f"{SERVICES_DIR}/{name}"
