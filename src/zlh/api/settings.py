"""Settings of the control plane: defaults, then a TOML config file, then ``ZLH_*`` variables.

Each setting has a default, a unit in its name where it has one, and a help line that also says
what it does not cover. Precedence (highest first): explicit values (the CLI's flags),
environment ``ZLH_<NAME>``, the config file (``--config``, ``ZLH_CONFIG`` or
``<data dir>/api.toml`` when present), defaults.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from zlh.api.clientaddr import Network, parse_networks
from zlh.api.tailnet.headscale import HeadscaleSettings
from zlh.backends import BackendName
from zlh.listen import parse_listen
from zlh.proxy.ideorigin import IdeOrigin
from zlh.proxy.serving import Scheduling
from zlh.proxy.settings import ProxySettings
from zlh.retired_settings import drop_retired
from zlh.schemas import RuntimeName

__all__ = ["ApiSettings", "load_settings", "url_port"]

CONFIG_FILE = "api.toml"


def url_port(url: str) -> int:
    """The TCP port an http(s) URL names, or its scheme's default."""
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZLH_", extra="forbid", validate_default=True)

    data_dir: Path = Field(
        Path("/var/lib/zlh"),
        description="state directory: SQLite database, key files, the built-in store's default "
        "place. Not where containers' disks live (that is the backend's business).",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db; default a SQLite "
        "file <data dir>/zlh.db. Migrations run on start; the database itself must exist.",
    )
    replica: str | None = Field(
        None,
        description="this API process's name among the replicas that share one PostgreSQL "
        "database (letters, digits, '.', '_', '-', ':'; default <hostname>:<listen port>). Leases "
        "on provisioning jobs and poller shares are held in this name.",
        pattern=r"^[A-Za-z0-9._:-]{1,100}$",
    )
    replica_heartbeat_s: float = Field(
        2.0,
        gt=0,
        description="PostgreSQL only: how often this API process refreshes its row in the "
        "replicas table and re-reads which replicas are alive (SQLite: one node, no heartbeat).",
    )
    replica_lease_s: float = Field(
        6.0,
        gt=0,
        description="a replica whose heartbeat is older than this is dead: its poller share "
        "goes to the live ones. More than replica_heartbeat_s (default 3x); does not cover "
        "provisioning jobs' leases.",
    )
    backend: BackendName = Field(
        "lxc", description="container backend. Its own settings (Proxmox URL, token) are its own."
    )
    allow_privileged: bool = Field(
        False,
        description="operator opt-in to privileged containers (container root = host root), "
        "logged as a warning: lxc runs them privileged where user namespaces are unavailable; "
        "proxmox accepts a clone template that is not unprivileged. New Proxmox CTs are always "
        "created unprivileged.",
    )
    listen: str = Field(
        "127.0.0.1:8780",
        description="public HOST:PORT: the front (zlh.proxy) listens here, serves the IDEs at "
        "/dev/<vmid>/ide and relays everything else to the API app on the unix socket.",
    )
    unix_socket: Path | None = Field(
        None,
        description="the API app's own unix socket, which the front relays to (default "
        "<data dir>/run/api.sock). Replaced on start, removed on a clean stop.",
    )
    front_workers: int | None = Field(
        None,
        ge=1,
        le=64,
        description="processes the public front runs on, sharing its ports (SO_REUSEPORT): one "
        "in the API's process, the others its children, restarted if they die. Default: the "
        "number of cores, at most 8. 1: the front in the API's process only.",
    )
    front_scheduling: Scheduling = Field(
        "batch",
        description="Linux scheduling policy of the processes that run the front (the API's "
        "and its front workers): `batch` (SCHED_BATCH) lets a process woken by traffic wait "
        "for the next scheduling point instead of preempting the task on its CPU, so each "
        "wake-up serves more connections (more requests per second for less CPU on a busy "
        "host), at up to a few ms of added latency while every core is busy with work that "
        "does not sleep. Not a priority: nice value and CPU share are unchanged, and agents "
        "and containers always run under the default policy. `normal`: the default policy.",
    )
    drain_timeout_s: float = Field(
        30.0,
        ge=0,
        le=86400,
        description="on SIGTERM, how long open WebSockets may run on while the process drains "
        "(new ones get 503 and /api/health/ready says draining) before it stops.",
    )
    metrics_listen: str | None = Field(
        None,
        description="HOST:PORT where `zlh up` also serves /metrics (Prometheus text) WITHOUT "
        "authentication, for a Prometheus on a private network; unset (the default): /metrics "
        "is served only on the public port, to an admin session. Does not cover the API or "
        "portal: nothing else is served there.",
    )
    ide_origin: str | None = Field(
        None,
        description="the origin IDEs are served on, never the portal's: "
        "`https://ide.example.com` (IDEs at /dev/<vmid>/ide/ there), `https://*.ide.example.com` "
        "(vmid N at https://N.ide.example.com/, one origin per container), or a second port "
        "`http://<host>:<port>` (the front listens there too, on listen's host). Unset: the "
        "second port listen+1, on the host name the browser used for the portal.",
    )
    admin_ide_access: bool = Field(
        False,
        description="let admins open other users' IDEs (each opening audited as "
        "admin-ide-open, and the portal says so on the container's page). Off: an admin gets "
        "the same 404 as any non-owner; the admin views of containers stay.",
    )
    front: ProxySettings = Field(
        default_factory=ProxySettings,
        description="the public front's settings (timeouts, public_origin for the WebSocket "
        "Origin check). Its session cookie name always follows cookie_name "
        "(session_cookie_name).",
    )
    store_dir: Path | None = Field(
        None,
        description="`zlh up` only: the built-in artifact store (default <data dir>/artifacts), "
        "mounted at /artifacts/. `zlh api` ignores it and uses artifact_server_url.",
    )
    artifact_server_url: str | None = Field(
        None,
        description="base URL of an external artifact server (its catalog is "
        "<url>/catalog.json); required by `zlh api`, unused by `zlh up`.",
    )
    artifact_url_for_containers: str | None = Field(
        None,
        description="base URL of the artifact server as containers reach it, put into every "
        "payload (default: artifact_server_url, or http://<listen>/artifacts for `zlh up`). "
        "Does not change where the API itself reads the catalog.",
    )
    catalog_cache_s: float = Field(
        5.0, ge=0, description="how long a fetched catalog is reused before it is read again."
    )
    jwt_key_file: Path | None = Field(
        None,
        description="HS256 signing key for session tokens; generated (0600) on first start. "
        "Default <data dir>/jwt.key. Rotating it logs everybody out.",
    )
    agent_key_file: Path | None = Field(
        None,
        description="key that per-container agent secrets are derived from (only a nonce is "
        "stored in the database). Default <data dir>/agent.key. Losing it orphans containers.",
    )
    session_ttl_s: int = Field(
        8 * 3600, gt=0, description="lifetime of a login session and its token. No sliding renewal."
    )
    api_token_max_days: int = Field(
        30,
        ge=1,
        le=3650,
        description="the longest life an API token may be given, in days; every token has "
        "an expiry. Lowering it does not shorten tokens already made.",
    )
    cookie_name: str = Field(
        "zlh_session",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="the session cookie's base name; sent as __Host-<name> when the cookie is "
        "Secure (browsers refuse that prefix otherwise). The front reads the same name.",
    )
    cookie_secure: bool | None = Field(
        None,
        description="force the cookie's Secure flag (and with it the __Host- prefix); default: "
        "set when front.public_origin is https. Not per request: the front must know the name.",
    )
    trusted_proxies: list[str] = Field(
        [],
        description="addresses or CIDRs of reverse proxies in front of the public port: "
        "X-Forwarded-For is honoured only from them, and the client is the right-most address "
        "not in this list. Empty: the front's TCP peer is the client.",
    )
    login_free_failures: int = Field(
        3,
        ge=0,
        description="failed logins of one user name from one client address before that pair "
        "must wait (0: from the first); other addresses are not affected.",
    )
    login_failures_per_address: int = Field(
        20,
        ge=0,
        description="failed logins from one client address, over all user names, before that "
        "address must wait (the same doubling back-off).",
    )
    login_backoff_base_s: float = Field(
        1.0, gt=0, description="the first back-off wait; each further failure doubles it."
    )
    login_backoff_max_s: float = Field(
        900.0, gt=0, description="the longest back-off wait; never a lock without end."
    )
    login_window_s: float = Field(
        900.0,
        gt=0,
        description="failures are forgotten this long after the back-off they caused ended "
        "without a new failure. Kept in memory on SQLite (a restart forgets them), in the "
        "database on PostgreSQL (replicas count together).",
    )
    argon2_time_cost: int = Field(
        3, ge=1, description="argon2id passes per password hash. Existing hashes keep theirs."
    )
    argon2_memory_kib: int = Field(
        65536, ge=8, description="argon2id memory per password hash, in KiB (64 MiB default)."
    )
    argon2_parallelism: int = Field(
        2, ge=1, description="argon2id lanes per password hash; at most the cores to spare."
    )
    max_containers_per_user: int = Field(
        3, ge=0, description="containers one user may hold at once; admins are not exempt."
    )
    max_running_per_user: int = Field(
        3,
        ge=0,
        description="containers one user may run at once; stopped ones do not count.",
    )
    container_memory_mb: int = Field(2048, gt=0, description="memory limit of each container.")
    layers: bool = Field(
        True,
        description="on backends that can (lxc), extract each runtime and add-on artifact once "
        "on the host (data dir layers/, verified, read-only) and mount it into the containers "
        "that use it, instead of every container downloading its own copy.",
    )
    container_cores: int = Field(2, gt=0, description="CPU cores of each container.")
    warm_pool: dict[str, int] | int | None = Field(
        None,
        description="containers kept created, started and provisioned ahead of demand, per "
        'runtime, e.g. {"node": 2} (TOML: [warm_pool] node = 2; a number: that many of the '
        "default runtime); unset: 1 of the default runtime (node, else the catalog's first); "
        "0 or {} turns the pool off. A request for a runtime's catalog-default version with "
        "just code-server takes a ready one (no install to wait for); others are built as "
        "usual. Pool containers count against no quota and are never idle-stopped.",
    )
    idle_stop_after: int = Field(
        3600,
        ge=0,
        description="stop a ready container nobody used for this many seconds (0: never); "
        "an admin may set another for a user (zlh user idle). Use is what a person does: "
        "typing or clicking in the IDE, console input, file-browser changes.",
    )
    idle_check_interval_s: float = Field(
        60.0, gt=0, description="how often containers are checked for being idle."
    )
    container_stop_timeout_s: float = Field(
        10.0, gt=0, description="a stop's wait after SIGTERM before the container is killed."
    )
    container_start_timeout_s: float = Field(
        120.0, gt=0, description="create+start until the backend reports it running."
    )
    agent_answer_timeout_s: float = Field(
        120.0,
        gt=0,
        description="after start, how long the agent may take to accept the payload. "
        "Not the install itself (see provision_timeout_s).",
    )
    provision_timeout_s: float = Field(
        1800.0,
        gt=0,
        description="payload accepted until ready; then the container is failed. Downloads of "
        "big runtimes count here.",
    )
    job_lease_s: float = Field(
        15.0,
        gt=0,
        description="a job's lease (provisioning, stop, start, restart, rebuild): the replica "
        "driving it renews it every third of this; when it stops renewing (it died), another "
        "replica takes the job once the lease has run out (on the database's clock). Not a "
        "timeout of the work itself (container_start_timeout_s, provision_timeout_s).",
    )
    job_max_attempts: int = Field(
        3,
        ge=1,
        description="how many times a provisioning job is begun (the first drive included) "
        "before a job whose drivers keep dying ends the container failed. Failures the drive "
        "sees itself end it failed at once.",
    )
    agent_request_timeout_s: float = Field(
        10.0, gt=0, description="one POST /provision to an agent. Not status polls."
    )
    poll_interval_s: float = Field(
        5.0,
        gt=0,
        description="how often each ready container's agent /status is read: at most this "
        "long between two reads, each container at a phase of its own within it.",
    )
    poll_interval_provisioning_s: float = Field(
        0.1,
        gt=0,
        description="the same while a container provisions, for live progress: also how late "
        "a container is seen ready (a warm-pool hand-out takes about half a second). ~0.7 ms "
        "of CPU per poll, only while containers provision.",
    )
    poll_timeout_s: float = Field(
        2.0, gt=0, description="one /status request; a slower agent counts as a miss."
    )
    poll_concurrency: int = Field(
        200, gt=0, description="status requests in flight at once, over all agents."
    )
    poll_max_backoff_s: float = Field(
        60.0, gt=0, description="longest wait between polls of an agent that keeps missing."
    )
    headscale: HeadscaleSettings = Field(
        default_factory=HeadscaleSettings,
        description="the tailnet for advanced users (TOML table [headscale]); without its url "
        "the tailscale addon is refused. Not the policy: `zlh tailnet policy` writes that.",
    )
    unreachable_after_misses: int = Field(
        3, gt=0, description="consecutive missed polls before a container shows unreachable."
    )

    @model_validator(mode="before")
    @classmethod
    def _retired(cls, values: Any) -> Any:
        return drop_retired(
            values,
            {
                "login_failures_per_user": "failed logins back off per user and address "
                "(login_free_failures, login_backoff_base_s) and never lock an account",
            },
        )

    @field_validator("replica_lease_s")
    @classmethod
    def _lease_outlives_heartbeat(cls, value: float, info: ValidationInfo) -> float:
        heartbeat = info.data.get("replica_heartbeat_s")
        if heartbeat is not None and value <= heartbeat:
            raise ValueError(f"must be longer than replica_heartbeat_s ({heartbeat:g})")
        return value

    @field_validator("warm_pool")
    @classmethod
    def _pool_sizes(cls, value: dict[str, int] | int | None) -> dict[str, int] | int | None:
        sizes = value.values() if isinstance(value, dict) else [value or 0]
        if any(size < 0 for size in sizes):
            raise ValueError("warm pool sizes are 0 or more")
        known = {name.value for name in RuntimeName}
        unknown = sorted(set(value) - known) if isinstance(value, dict) else []
        if unknown:
            raise ValueError(f"unknown runtime {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return value

    @field_validator("listen", "metrics_listen")
    @classmethod
    def _listen_is_host_port(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen(value)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return [str(network) for network in parse_networks(value)]

    @field_validator("ide_origin")
    @classmethod
    def _ide_origin_shape(cls, value: str | None) -> str | None:
        return None if value is None else IdeOrigin.parse(value).origin

    @field_validator("artifact_server_url", "artifact_url_for_containers")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/") if value else value

    @property
    def ide_listen(self) -> tuple[str, int] | None:
        """Where the front listens for the IDE origin of its own (the second-port form): listen's
        host with ide_origin's port when that is explicit and not listen's; listen+1 when
        ide_origin is unset; None for the forms recognised by Host on the main listener."""
        host, port = parse_listen(self.listen)
        if self.ide_origin is None:
            return host, port + 1
        ide = IdeOrigin.parse(self.ide_origin)
        if ide.wildcard or ide.port is None or ide.port == port:
            return None
        return host, ide.port

    def ide_origin_for(self, portal_host: str, scheme: str) -> IdeOrigin:
        """The IDE origin as a browser that reached the portal at ``portal_host`` (a Host
        header) sees it: the setting, or the second port on that host."""
        if self.ide_origin is not None:
            return IdeOrigin.parse(self.ide_origin)
        origin = self.front.public_origin
        if origin is not None:
            scheme, _, portal_host = origin.partition("://")
        hostname = IdeOrigin.parse(f"{scheme}://{portal_host}").host
        return IdeOrigin(scheme, hostname, parse_listen(self.listen)[1] + 1, wildcard=False)

    @property
    def replica_name(self) -> str:
        return self.replica or f"{socket.gethostname()}:{parse_listen(self.listen)[1]}"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'zlh.db'}"

    @property
    def existing_db_url(self) -> str | None:
        """:attr:`db_url`, or None when it is the data dir's SQLite file and that is not made
        yet (a command that only reads, ``zlh doctor``, must not create it)."""
        if self.database_url is None and not (self.data_dir / "zlh.db").exists():
            return None
        return self.db_url

    @property
    def session_cookie_secure(self) -> bool:
        if self.cookie_secure is not None:
            return self.cookie_secure
        return (self.front.public_origin or "").startswith("https://")

    @property
    def session_cookie_name(self) -> str:
        """The one place the cookie's name is decided; the API and the front both use it."""
        return f"__Host-{self.cookie_name}" if self.session_cookie_secure else self.cookie_name

    @property
    def front_settings(self) -> ProxySettings:
        """``front`` with the session cookie's name as the API sets it."""
        return self.front.model_copy(update={"session_cookie": self.session_cookie_name})

    @property
    def trusted_networks(self) -> tuple[Network, ...]:
        return parse_networks(self.trusted_proxies)

    @property
    def jwt_key_path(self) -> Path:
        return self.jwt_key_file or self.data_dir / "jwt.key"

    @property
    def agent_key_path(self) -> Path:
        return self.agent_key_file or self.data_dir / "agent.key"

    @property
    def store_path(self) -> Path:
        return self.store_dir or self.data_dir / "artifacts"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file is named by load_settings through model_config["toml_file"].
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)


def _config_file(config: Path | None, data_dir: Path | None) -> Path | None:
    explicit = config or (Path(p) if (p := os.environ.get("ZLH_CONFIG")) else None)
    if explicit is not None:
        if not explicit.is_file():
            raise ValueError(f"config file {explicit} does not exist")
        return explicit
    base = data_dir or Path(os.environ.get("ZLH_DATA_DIR", "/var/lib/zlh"))
    default = base / CONFIG_FILE
    return default if default.is_file() else None


def load_settings(config: Path | None = None, **explicit: Any) -> ApiSettings:
    """Settings from ``explicit`` values (None means "not given"), env and the config file."""
    given = {key: value for key, value in explicit.items() if value is not None}
    data_dir = given.get("data_dir")
    toml_file = _config_file(config, Path(data_dir) if data_dir else None)

    class _FromFile(ApiSettings):
        model_config = SettingsConfigDict(toml_file=toml_file)

    return _FromFile(**given)
