"""Who is asking: scrypt password hashes, signed one-time login links, server-side sessions with CSRF tokens.

A session is a random token in an HttpOnly cookie; only its sha256 is stored, so a copy of the database
cannot be used to log in. Each session carries its own CSRF token, which every form and every autosave
request must send back; the login form, which comes before any session, uses a double-submit cookie.
A one-time link signs (rater id, nonce) with the study's secret: it works once (the nonce is cleared on
use) and only within its max age.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session

from shicheng.rate.db import Account, WebSession, audit, now

# scrypt at N=2^14, r=8 costs 16 MiB and ~50 ms per check: slow for a guesser, fine for one login.
_N, _R, _P = 2**14, 8, 1
LINK_SALT = "shicheng-rate-login"


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        kind, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if kind != "scrypt":
        return False
    got = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                         dklen=len(digest) // 2)
    return hmac.compare_digest(got.hex(), digest)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def open_session(s: Session, account: Account, ttl_s: float) -> tuple[str, WebSession]:
    token = secrets.token_urlsafe(32)
    ws = WebSession(token_hash=_token_hash(token), account_id=account.id, csrf=secrets.token_urlsafe(24),
                    expires_at=now() + ttl_s)
    s.add(ws)
    return token, ws


def find_session(s: Session, token: str | None) -> tuple[WebSession, Account] | None:
    """The live session of a cookie value, or None (unknown, or expired: an expired one is deleted)."""
    if not token:
        return None
    ws = s.scalar(select(WebSession).where(WebSession.token_hash == _token_hash(token)))
    if ws is None:
        return None
    if ws.expires_at <= now():
        s.delete(ws)
        return None
    account = s.get(Account, ws.account_id)
    return (ws, account) if account is not None else None


def csrf_ok(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


def make_link_token(secret: str, rater_id: int, nonce: str) -> str:
    return URLSafeTimedSerializer(secret, salt=LINK_SALT).dumps({"r": rater_id, "n": nonce})


def issue_link(s: Session, secret: str, account: Account, actor: str) -> str:
    """A fresh one-time link token for `account`; any earlier link of theirs stops working."""
    account.link_nonce = secrets.token_urlsafe(16)
    audit(s, actor, "issue_link", account.login)
    return make_link_token(secret, account.id, account.link_nonce)


def redeem_link(s: Session, secret: str, token: str, max_age_s: float) -> Account | None:
    """The account a valid, unused, unexpired link names; the link is spent."""
    try:
        data = URLSafeTimedSerializer(secret, salt=LINK_SALT).loads(token, max_age=max_age_s)
    except (SignatureExpired, BadSignature):
        return None
    if not isinstance(data, dict):
        return None
    account = s.get(Account, data.get("r"))
    if account is None or not account.link_nonce or not csrf_ok(account.link_nonce, data.get("n")):
        return None
    account.link_nonce = None
    return account


__all__ = ["csrf_ok", "find_session", "hash_password", "issue_link", "make_link_token", "open_session",
           "redeem_link", "verify_password"]
