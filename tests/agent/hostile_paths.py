"""Hypothesis strategies for client paths that must never reach outside the workspace."""

from __future__ import annotations

from hypothesis import strategies as st

# Tokens that hide a separator, a dot name, a NUL or a root once decoded or normalised.
HIDDEN_DOTS = [
    "%2e%2e", "%2E%2E", ".%2e", "%2e.", "%252e%252e", "%25252e%25252e", "%c0%ae%c0%ae",
    "%e0%80%ae%e0%80%ae", "\uff0e\uff0e", "\u2025", "\u2024\u2024", "\u2024", "\uff0e",
]  # fmt: skip
HIDDEN_SEPARATORS = [
    "a%2fb", "a%2Fb", "a%252fb", "a\uff0fb", "a%ef%bc%8fb", "a%c0%afb", "a%5cb", "a\uff3cb",
    "a%e0%80%afb",
]  # fmt: skip
HIDDEN_NUL = ["a%00b", "a%2500b", "a\x00b", "\x00"]
ABSOLUTE = ["/", "/etc/passwd", "//etc", "\\etc", "C:\\Windows", "%2fetc", "\uff0fetc"]
BROKEN_UTF8 = ["\ufffd", "a\udcc0b"]
TAILS = ["etc/passwd", "canary.txt", "outside/canary.txt", "workspace2/canary.txt", "new"]
SAFE = st.sampled_from(["src", "a", "inner", "x.txt", "."])


def traversals() -> st.SearchStrategy[str]:
    """More ``..`` than there are names before them."""
    return st.integers(1, 4).flatmap(
        lambda depth: st.tuples(
            st.lists(SAFE.filter(lambda s: s != "."), max_size=depth - 1),
            st.sampled_from(TAILS),
        ).map(lambda t: "/".join([*t[0], *([".."] * depth), t[1]]))
    )


def hostile_paths() -> st.SearchStrategy[str]:
    """Paths that :func:`parse_client_path` must refuse wherever the trick sits."""
    token = st.sampled_from(HIDDEN_DOTS + HIDDEN_SEPARATORS + HIDDEN_NUL + BROKEN_UTF8)
    embedded = st.tuples(st.lists(SAFE, max_size=3), token, st.lists(SAFE, max_size=3)).map(
        lambda t: "/".join([*t[0], t[1], *t[2]])
    )
    windows = st.lists(SAFE, min_size=1, max_size=3).map(lambda names: "..\\" + "\\".join(names))
    return st.one_of(traversals(), embedded, windows, st.sampled_from(ABSOLUTE))


def through_links(links: list[str]) -> st.SearchStrategy[str]:
    """Paths that pass through a planted link (never the last name, where it is the link itself)."""
    return st.tuples(st.sampled_from(links), st.sampled_from(TAILS)).map("/".join)
