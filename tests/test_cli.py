"""The CLI contract: --version, --help everywhere, exit 2 with one line on bad usage."""

from __future__ import annotations

import subprocess
import sys

import pytest

from zlh import __version__
from zlh.api.apitokens import Scope
from zlh.cli import build_parser, main
from zlh.dev.cli import SCOPES


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zlh.cli", *args], capture_output=True, text=True, check=False
    )


def test_version_prints_the_package_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"zlh {__version__}"


def _all_command_paths() -> list[list[str]]:
    paths: list[list[str]] = []

    def walk(parser: object, prefix: list[str]) -> None:
        for action in getattr(parser, "_actions", []):
            choices = getattr(action, "choices", None)
            if isinstance(choices, dict):
                for name, sub in choices.items():
                    paths.append([*prefix, name])
                    walk(sub, [*prefix, name])

    walk(build_parser(), [])
    return paths


@pytest.mark.parametrize("path", _all_command_paths(), ids=" ".join)
def test_every_subcommand_has_help(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*path, "--help"])
    assert info.value.code == 0
    assert "usage: zlh " + " ".join(path) in capsys.readouterr().out


@pytest.mark.parametrize(
    "args", [["nonsense"], ["artifacts", "add", "bogus", "node", "1"], ["agent", "--listen", "x"]]
)
def test_bad_usage_exits_2_with_one_line(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], result.stderr


def test_building_the_parser_imports_no_command_code() -> None:
    """`zlh agent` in a container and `zlh --help` pay only for argparse: the models, the web
    frameworks and the backends' implementations load when their command runs."""
    probe = (
        "import sys, zlh.cli; zlh.cli.build_parser(); "
        "print(sorted(m for m in ('pydantic', 'fastapi', 'aiohttp', 'sqlalchemy', 'zlh.schemas',"
        " 'zlh.api.app', 'zlh.agent.app', 'zlh.backends.lxc') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_token_commands_offer_exactly_the_apis_scopes() -> None:
    assert set(SCOPES) == {scope.value for scope in Scope}
