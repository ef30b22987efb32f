"""``zlh token create|list|revoke``: the signed-in user's API tokens on a running platform.

Signs in as ``zlh dev`` does (a session: tokens cannot make or revoke tokens). The secret of a
new token is printed once, alone on stdout's last line, so ``$(zlh token create …)`` can keep
it; nothing can show it again.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from zlh.api.bodies import TokenCreate, TokenOut
from zlh.dev.commands import signed_in
from zlh.errors import UsageError

__all__ = ["cmd_create", "cmd_list", "cmd_revoke"]


def _when(token: TokenOut) -> str:
    return f"{token.expires_at:%Y-%m-%d %H:%M}Z" + (" (expired)" if token.expired else "")


def cmd_create(args: argparse.Namespace) -> int:
    try:
        body = TokenCreate(name=args.name, scopes=args.scopes, expires_in_days=args.expires_in_days)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(part) for part in problem["loc"])
        raise UsageError(f"token {field}: {problem['msg']}") from None
    with signed_in(args) as client:
        made = client.create_token(body)
    print(
        f"token {made.id} {made.name!r}: {', '.join(made.scopes)}, expires {_when(made)}; "
        "the secret below is shown only now:",
        file=sys.stderr,
    )
    print(made.token)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with signed_in(args) as client:
        tokens = client.tokens(every_user=args.all)
    if not tokens:
        print("no tokens")
    for t in tokens:
        used = f"{t.last_used_at:%Y-%m-%d %H:%M}Z" if t.last_used_at else "never"
        scopes = ",".join(t.scopes)
        print(f"{t.id:>5}  {t.name:<20} {t.owner:<12} {scopes:<32} {_when(t):<28} used {used}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    with signed_in(args) as client:
        client.revoke_token(args.token_id)
    print(f"token {args.token_id} revoked")
    return 0
