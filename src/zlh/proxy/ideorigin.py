"""Where IDEs are served: ``ide_origin``, an origin of its own, never the portal's.

A page a customer's container serves (through code-server's ``/proxy/<port>/``) runs with the
rights of the origin it is served on. On the portal's origin it could call the API with an
admin's cookie; on an origin of its own it reaches nothing but IDEs. Three forms:

* a host name, ``https://ide.example.com``: IDEs at ``/dev/<vmid>/ide/`` there;
* a wildcard, ``https://*.ide.example.com``: the IDE of vmid N at ``https://N.ide.example.com/``,
  one origin per container (the strongest: containers cannot reach each other's IDE either);
* a second port on the portal's host, ``http://<host>:<port>``, for installs without DNS. The
  front gets a listener of its own there (``zlh up`` opens it); unset ``ide_origin`` means this
  form on the listen port + 1, on whatever host name the browser reached the portal by.
  Cookies do not separate ports, so this form is the weakest of the three (docs/security.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["IdeOrigin"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class IdeOrigin:
    """A parsed ``ide_origin``: ``host`` without ``*.`` for the wildcard form; ``port`` is
    None for the scheme's default port (browsers then send no port in ``Host``)."""

    scheme: str
    host: str
    port: int | None
    wildcard: bool

    @classmethod
    def parse(cls, value: str) -> IdeOrigin:
        """ValueError naming what is wrong with ``value``."""
        parts = urlsplit(value.strip())
        shape = "http(s)://host[:port] or http(s)://*.domain[:port]"
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"ide_origin must be {shape}, got {value!r}") from None
        host = (parts.hostname or "").lower()
        if (
            parts.scheme not in _DEFAULT_PORTS
            or not host
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
            or parts.username is not None
        ):
            raise ValueError(f"ide_origin must be {shape}, got {value!r}")
        wildcard = host.startswith("*.")
        if wildcard:
            host = host[2:]
        if "*" in host or (wildcard and "." not in host):
            raise ValueError(f"ide_origin: only one leading '*.' label is allowed, got {value!r}")
        if port == _DEFAULT_PORTS[parts.scheme]:
            port = None
        return cls(parts.scheme, host, port, wildcard)

    @property
    def netloc(self) -> str:
        """``host[:port]`` as browsers send it in ``Host`` (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def origin(self) -> str:
        """The canonical spelling (``*.`` kept, default port dropped)."""
        return f"{self.scheme}://{'*.' if self.wildcard else ''}{self.netloc}"

    @property
    def secure(self) -> bool:
        return self.scheme == "https"

    def base_url(self, vmid: int) -> str:
        """The origin vmid's IDE is served on."""
        netloc = f"{vmid}.{self.netloc}" if self.wildcard else self.netloc
        return f"{self.scheme}://{netloc}"

    def preview_base_url(self, vmid: int, port: int) -> str:
        """The origin a preview is served on: its own host ``{port}-{vmid}.`` for the wildcard
        form, else the IDE's (zlh.proxy.previews)."""
        if self.wildcard:
            return f"{self.scheme}://{port}-{vmid}.{self.netloc}"
        return self.base_url(vmid)

    def preview_urls(self, vmid: int, port: int) -> tuple[str, str]:
        """The preview of ``port``: prefix stripped (the app sees ``/``), prefix kept (it sees
        ``/dev/{vmid}/port/{port}/``). On a preview's own host the path reaches the app as it
        is, so both are paths there; elsewhere the ``zlh-prefix`` flag picks the mode."""
        base, path = self.preview_base_url(vmid, port), f"/dev/{vmid}/port/{port}/"
        if self.wildcard:
            return f"{base}/", f"{base}{path}"
        return f"{base}{path}?zlh-prefix=strip", f"{base}{path}?zlh-prefix=keep"

    def landing_path(self, vmid: int) -> str:
        """Where the browser goes once the ticket is exchanged: the IDE's first page."""
        return "/" if self.wildcard else f"/dev/{vmid}/ide/"

    def cookie_path(self, vmid: int) -> str:
        """The IDE cookie's Path: the container's own prefix where origins are shared."""
        return "/" if self.wildcard else f"/dev/{vmid}/"
