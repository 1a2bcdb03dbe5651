"""Browser sessions: a cookie that authorises reads, signed with a secret of the server.

A browser page cannot put a header on ``<img src>``, so ``POST /api/session``
exchanges a valid API key for a session cookie. The cookie is an itsdangerous
``URLSafeTimedSerializer`` token (salt ``clipsearch-session``): its payload is a
*fingerprint* of the key that opened it, HMAC-SHA256(secret, key), its signature
and timestamp are checked with the same secret.

* The secret is 32 random bytes made at the first start and kept in
  ``DATA_DIR/session-secret`` (mode 0600). Every worker process, and every restart,
  reads the same file: the first to start creates it atomically (written under a
  temporary name, then hard-linked to its final name, which never replaces an
  existing file), the others read it. Deleting the file ends every session.
* The cookie contains neither the key nor anything a key guess can be tested against
  without the secret: a stolen cookie lets nobody try keys offline.
* Removing a key from the configuration ends its sessions: the fingerprint in the
  cookie must be that of a key still configured.
* The lifetime is checked from the signed timestamp against the *current* setting
  (``session_hours``), so lowering it also shortens sessions already handed out.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from search.errors import SearchError

log = logging.getLogger(__name__)

SESSION_COOKIE = "clipsearch_session"
#: Default lifetime of a session cookie in seconds (setting ``session_hours``).
SESSION_MAX_AGE = 12 * 3600
SECRET_FILE = "session-secret"
SECRET_BYTES = 32
SALT = "clipsearch-session"
MAX_TOKEN_CHARS = 512  # a real token is ~100 characters; anything longer is not one of ours
_READ_RETRY_S = 2.0  # how long a reader waits for a secret being written (no-link fallback)


def _no_follow() -> int:
    return getattr(os, "O_NOFOLLOW", 0)


def load_secret(data_dir: str) -> bytes:
    """The session secret of ``data_dir``, created (mode 0600) when there is none yet.

    Safe to call from several processes at once: all of them get the same secret.
    Raises SearchError when the file exists but is not a secret of ours.
    """
    path = os.path.join(data_dir, SECRET_FILE)
    deadline = time.monotonic() + _READ_RETRY_S
    while True:
        try:
            fd = os.open(path, os.O_RDONLY | _no_follow())
        except FileNotFoundError:
            _create(path)
            continue
        except OSError as e:
            raise SearchError(f"cannot read the session secret {path}: {e.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            secret = _parse(f.read(4 * SECRET_BYTES).strip())
            if secret is not None and st.st_mode & 0o077 and hasattr(os, "fchmod"):
                log.warning("session secret %s was open to other users; mode set to 0600", path)
                os.fchmod(f.fileno(), 0o600)
        if secret is not None:
            return secret
        if time.monotonic() < deadline and time.time() - st.st_mtime < 10:
            time.sleep(0.05)  # another process is still writing it (the no-link fallback)
            continue
        raise SearchError(f"{path} is not a session secret ({SECRET_BYTES * 2} hex characters); "
                          f"remove it to make a new one (every browser session ends)")


def _parse(text: bytes) -> bytes | None:
    try:
        secret = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    return secret if len(secret) == SECRET_BYTES else None


def _create(path: str) -> None:
    """Write a new secret to ``path`` unless another process gets there first."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    data = (secrets.token_bytes(SECRET_BYTES).hex() + "\n").encode("ascii")
    tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _no_follow(), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic, and never replaces a secret another process made
        except FileExistsError:
            return
        except OSError:  # no hard links on this file system: exclusive create instead
            try:
                out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _no_follow(), 0o600)
            except FileExistsError:
                return
            with os.fdopen(out, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        log.info("created the session secret %s", path)
    finally:
        try:
            os.remove(tmp)
        except OSError:
            pass
    if hasattr(os, "O_DIRECTORY"):
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


@dataclass(frozen=True)
class SessionCheck:
    """What a cookie turned out to be. ``forged``: its signature is not ours (a guess,
    or a cookie of another server); an expired or revoked cookie is not forged."""

    expires: int | None = None
    forged: bool = False

    @property
    def valid(self) -> bool:
        return self.expires is not None


class SessionSigner:
    """Issues and checks session tokens with one server secret."""

    def __init__(self, secret: bytes):
        self._secret = secret
        self._serializer = URLSafeTimedSerializer(secret, salt=SALT)

    def fingerprint(self, key: str) -> str:
        """A keyed digest of ``key``: tells configured keys apart, reveals nothing without
        the secret."""
        mac = hmac.new(self._secret, b"clipsearch-key:" + key.encode("utf-8", "surrogateescape"),
                       hashlib.sha256)
        return mac.hexdigest()[:32]

    def issue(self, key: str) -> str:
        """A token for a session opened with ``key`` (its age starts now)."""
        return self._serializer.dumps({"k": self.fingerprint(key)})

    def check(self, token: str | None, keys: tuple[str, ...], max_age: int) -> SessionCheck:
        """Whether ``token`` is a live session of a key still among ``keys``."""
        if not token:
            return SessionCheck()
        if len(token) > MAX_TOKEN_CHARS:
            return SessionCheck(forged=True)
        try:
            payload, issued = self._serializer.loads(token, max_age=max_age,
                                                     return_timestamp=True)
        except SignatureExpired:
            return SessionCheck()  # ours, but too old (or from the future)
        except BadSignature:
            return SessionCheck(forged=True)
        fingerprint = payload.get("k") if isinstance(payload, dict) else None
        if not isinstance(fingerprint, str):
            return SessionCheck()
        # Compare with every key (no early exit): timing reveals no key's position.
        matches = [hmac.compare_digest(fingerprint, self.fingerprint(k)) for k in keys]
        if not any(matches):
            return SessionCheck()  # its key was removed from the configuration
        return SessionCheck(expires=int(issued.timestamp()) + max_age)


def session_max_age(settings) -> int:
    """The configured session lifetime in seconds (at least one minute)."""
    return max(60, int(settings.session_hours) * 3600)
