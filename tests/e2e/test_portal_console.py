"""The Console tab in Chromium: xterm.js on the console WebSocket, typed into like a person."""

from __future__ import annotations

import os
import pwd
import re
import time
from collections.abc import Callable

import pytest
from e2e_kit import Platform, Provisioned, Session, capture
from playwright.sync_api import Page

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _terminal_lines(page: Page) -> list[str]:
    return [line.rstrip() for line in page.locator(".xterm-rows").inner_text().splitlines()]


def _wait_for_lines(
    page: Page, done: Callable[[list[str]], bool], timeout_s: float = 20.0
) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while not done(lines := _terminal_lines(page)):
        if time.monotonic() > deadline:
            raise AssertionError(f"the terminal never showed what was expected: {lines}")
        page.wait_for_timeout(100)
    return lines


def _widths(lines: list[str]) -> list[int]:
    return [int(line.split()[1]) for line in lines if re.fullmatch(r"width \d+", line)]


def test_whoami_typed_in_the_console_prints_the_dev_user(
    alice: Session, platform: Platform, provisioned: Provisioned
) -> None:
    # Under the process backend the agent, and so the console's shell, runs as the user running
    # the tests (the dev user exists only inside a real container): that is who must answer.
    # The LXC run asserts `dev` itself.
    expected = pwd.getpwuid(os.geteuid()).pw_name
    page = alice.page
    page.goto(f"{platform.base_url}/c/{provisioned.vmid}")
    page.get_by_role("link", name="Console").click()
    page.get_by_text("Connected to the container's shell.").wait_for()
    page.locator(".xterm").click()
    page.keyboard.type("whoami\n")
    _wait_for_lines(page, lambda lines: expected in lines)
    page.keyboard.type('echo "width $(tput cols)"\n')
    wide = _widths(_wait_for_lines(page, lambda lines: len(_widths(lines)) == 1))[0]
    capture(page, "console")
    # A narrower window makes a narrower terminal, and the shell is told the new size.
    page.set_viewport_size({"width": 700, "height": 800})
    page.keyboard.type('echo "width $(tput cols)"\n')
    narrow = _widths(_wait_for_lines(page, lambda lines: len(_widths(lines)) == 2))[1]
    assert 0 < narrow < wide
