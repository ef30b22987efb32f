"""Key files of the control plane: created once (0600, atomically), then only read."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from zlh.errors import ZlhError

__all__ = ["agent_secret", "load_or_create_key"]

KEY_BYTES = 32


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path``; a new random one if the file does not exist yet.

    A key file readable by group or others is refused: it signs every session.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return _create(path)
    if mode & 0o077:
        raise ZlhError(f"key file {path} is readable by others (mode {mode & 0o777:o}); chmod 600")
    data = path.read_bytes().strip()
    try:
        key = bytes.fromhex(data.decode())
    except (UnicodeDecodeError, ValueError):
        raise ZlhError(f"key file {path} does not hold a hex key") from None
    if len(key) < KEY_BYTES:
        raise ZlhError(f"key file {path} holds {len(key)} bytes; at least {KEY_BYTES} needed")
    return key


def _create(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key.hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        # link() fails if another process created the key first: then use theirs.
        os.link(tmp, path)
    except FileExistsError:
        return load_or_create_key(path)
    finally:
        tmp.unlink()
    return key


def agent_secret(key: bytes, vmid: int, nonce: str) -> str:
    """The per-container agent secret. Only ``nonce`` is stored; the key stays in its file."""
    return hmac.new(key, f"zlh-agent:{vmid}:{nonce}".encode(), hashlib.sha256).hexdigest()
