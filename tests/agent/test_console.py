"""The console over a real WebSocket: a login shell on a PTY, as the dev user, in the workspace."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from support import MARK, ConsoleClient, pid_gone, serve_agent_app
from support import LiveAgent as Live
from zlh.agent.devuser import DevEnvironment
from zlh.agent.lazy_routes import setup_console_routes
from zlh.agent.runas import DevIdentity

TOKEN = "test-container-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

CAP = 3


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("console")
    (base / "home").mkdir()
    (base / "workspace").mkdir()
    return base / "workspace"


@pytest.fixture(scope="module")
def live(workspace: Path) -> Iterator[Live]:
    home = workspace.parent / "home"
    dev = DevEnvironment("dev", DevIdentity.current(home=home), home, workspace)

    def setup(app: Any) -> None:
        setup_console_routes(app, environment=lambda: dev, max_consoles=CAP)

    with serve_agent_app(setup, token=TOKEN) as running:
        yield running


@contextmanager
def open_console(live: Live, query: str = "") -> Iterator[ConsoleClient]:
    url = f"{live.ws_url}/console{query}"
    with connect(url, additional_headers=AUTH, open_timeout=10) as ws:
        yield ConsoleClient(ws)


def wait_until(condition: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_shell_runs_as_the_dev_user_in_the_workspace_with_a_terminal_env(
    live: Live, workspace: Path
) -> None:
    with open_console(live) as term:
        assert term.ask("$(id -un)") == pwd.getpwuid(os.geteuid()).pw_name
        assert term.ask("$(pwd)") == str(workspace)
        assert term.ask("$TERM $HOME") == f"xterm-256color {workspace.parent / 'home'}"
        assert term.ask("$(tty)").startswith("/dev/pts/")
        session, shell = term.ask("$(ps -o sid= -p $$ | tr -d ' ') $$").split()
        assert session == shell, "the shell leads its own session"


def test_resize_changes_stty_size(live: Live) -> None:
    with open_console(live, "?rows=30&cols=90") as term:
        assert term.ask("$(stty size)") == "30 90"
        term.ws.send(json.dumps({"type": "resize", "rows": 41, "cols": 133}))
        assert term.ask("$(stty size)") == "41 133"


def test_closing_the_socket_kills_the_shell_and_its_jobs(live: Live) -> None:
    with open_console(live) as term:
        shell = int(term.ask("$$"))
        term.type("sleep 300 &")
        job = int(term.ask("$!"))
        term.type("trap '' HUP; sleep 301 &")  # a job that ignores the hangup must still die
        stubborn = int(term.ask("$!"))
        assert not pid_gone(shell) and not pid_gone(job) and not pid_gone(stubborn)
    wait_until(lambda: pid_gone(shell) and pid_gone(job) and pid_gone(stubborn), "the session")


def test_the_shell_exiting_reports_its_code_and_closes(live: Live) -> None:
    with open_console(live) as term:
        term.type("exit 3")
        assert term.control("exit") == {"type": "exit", "code": 3}


def test_utf8_crosses_both_ways_untouched(live: Live) -> None:
    with open_console(live) as term:
        term.type("echo '<''<h\u00e9llo \u20ac \U0001f600>>'")
        assert term.expect(MARK).group(1).decode() == "h\u00e9llo \u20ac \U0001f600"
        term.ws.send(json.dumps({"type": "input", "data": "echo '<''<\u00fcber>>'\n"}))
        assert term.expect(MARK).group(1).decode() == "\u00fcber"


def test_a_bad_control_message_gets_an_error_and_the_console_stays(live: Live) -> None:
    with open_console(live) as term:
        term.ws.send(json.dumps({"type": "resize", "rows": 0, "cols": 80}))
        assert "rows" in term.control("error")["message"]
        term.ws.send("not json")
        assert term.ask("still") == "still"


def test_several_consoles_are_separate_shells_up_to_the_cap(live: Live) -> None:
    with ExitStack() as stack:
        terms = [stack.enter_context(open_console(live)) for _ in range(CAP)]
        assert len({t.ask("$$") for t in terms}) == CAP
        with pytest.raises(InvalidStatus) as refused, open_console(live):
            pass
        assert refused.value.response.status_code == 429
        assert b"close one first" in (refused.value.response.body or b"")
    wait_until(lambda: _opens(live), "a console slot to free up")


def _opens(live: Live) -> bool:
    try:
        with open_console(live):
            pass
    except InvalidStatus:
        return False
    return True


def test_missing_token_is_401(live: Live) -> None:
    with pytest.raises(InvalidStatus) as refused, connect(f"{live.ws_url}/console"):
        pass
    assert refused.value.response.status_code == 401


THROWAWAY = "zlh-console-test"


@pytest.fixture
def throwaway_user() -> Iterator[DevIdentity]:
    """A real, unprivileged user for the test; reused if a killed run left it, removed after."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    base = Path(tempfile.mkdtemp(prefix="zlh-console-"))
    base.chmod(0o755)
    created = False
    try:
        pwd.getpwnam(THROWAWAY)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/bin/bash", THROWAWAY],
            check=True,
        )
        created = True
    try:
        user = DevIdentity.lookup(THROWAWAY)
        home = base / "home"
        for path in (home, home / "workspace"):
            path.mkdir()
            os.chown(path, user.uid, user.gid)
        yield DevIdentity(name=user.name, uid=user.uid, gid=user.gid, groups=user.groups, home=home)
    finally:
        if created:
            subprocess.run(["userdel", THROWAWAY], check=False)
        shutil.rmtree(base)


@pytest.mark.root
def test_as_root_the_shell_is_the_dev_user_not_root(throwaway_user: DevIdentity) -> None:
    workspace = throwaway_user.home / "workspace"

    def setup(app: Any) -> None:
        dev = DevEnvironment(THROWAWAY, throwaway_user, throwaway_user.home, workspace)
        setup_console_routes(app, environment=lambda: dev)

    with serve_agent_app(setup, token=TOKEN) as running, open_console(running) as term:
        assert term.ask("$(id -un)") == THROWAWAY
        assert term.ask("$(id -u)") != "0"
        assert term.ask("$(pwd)") == str(workspace)
        assert term.ask("$HOME $USER") == f"{throwaway_user.home} {THROWAWAY}"
        term.type("touch made-in-shell; touch /root/zlh-console-test 2>/dev/null")
        assert term.ask("$(stat -c %U made-in-shell)") == THROWAWAY
    assert not Path("/root/zlh-console-test").exists()


def test_before_provisioning_the_console_answers_503() -> None:
    def setup(app: Any) -> None:
        setup_console_routes(app, environment=lambda: None)

    with (
        serve_agent_app(setup, token=TOKEN) as running,
        pytest.raises(InvalidStatus) as refused,
        open_console(running),
    ):
        pass
    assert refused.value.response.status_code == 503
