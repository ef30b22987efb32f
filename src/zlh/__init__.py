"""ZeroLagHub dev containers: browser-IDE developer containers from a runtime catalog."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("zlh")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
