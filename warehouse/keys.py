"""Lenders and their API keys: register, issue, list, rotate, revoke, authenticate.

A key is a random token, ``sdk_<prefix>_<secret>``, shown to the lender **once** (by
``dossier lender add`` or a rotation) and never stored: the warehouse keeps its SHA-256 and its
prefix. The prefix names the key in lists, logs and revocations without revealing it.

Why SHA-256 and not a password hash (bcrypt, argon2): those slow functions make guessing a
*low-entropy* secret chosen by a person expensive. A key here carries 256 random bits, so no
amount of guessing finds a token from its hash, and a fast hash lets every request find its key
by one indexed lookup (``key_sha256`` is unique) instead of trying a slow hash per stored key.

A key is **valid** until it is revoked or, after a rotation, until its grace period ends
(``expires_at``). :func:`authenticate` tells apart a token nobody issued (:class:`UnknownKey`)
from one that was valid and no longer is (:class:`KeyNotValid`), so the service can answer
401 and 403.

>>> token, prefix = new_token()
>>> token.startswith(f"sdk_{prefix}_"), len(prefix), len(hash_token(token))
(True, 12, 64)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import bindparam, event, or_, select
from sqlalchemy.orm import Session

from warehouse.errors import DossierError, InputError
from warehouse.models import Lender, LenderKey

LENDER_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,63}$")
"""A lender id: lowercase letters, digits and hyphens, 2-64 characters (it also names its pull files)."""

DEFAULT_GRACE = dt.timedelta(hours=24)
"""How long a rotated key stays valid beside its successor, unless told otherwise."""

MAX_GRACE = dt.timedelta(days=30)


class KeyError_(DossierError):
    """Base of the key errors (the trailing underscore keeps clear of the builtin ``KeyError``)."""


class UnknownKey(KeyError_):
    """No key with this token (or prefix) was ever issued."""


class KeyNotValid(KeyError_):
    """The key was issued but is revoked, or its grace period after a rotation is over."""


_generation = 0
"""Bumped by every revocation and rotation made in this process (:func:`changed`): what a
:class:`KeyCache` of this process kept before it is checked again at the next use."""


def _bump(*_: object) -> None:
    global _generation
    _generation += 1


def changed(session: Session) -> None:
    """Note that a key is revoked or rotated in ``session``: every :class:`KeyCache` of this process
    forgets what it verified, now and again when the session commits (a key verified by another
    request between the two, which read the row before the change, is not kept past the commit)."""
    _bump()
    event.listen(session, "after_commit", _bump, once=True)


def generation() -> int:
    """This process's count of revocations and rotations (:func:`changed`)."""
    return _generation


def new_token() -> tuple[str, str]:
    """A fresh token and its prefix (12 hex characters)."""
    prefix = secrets.token_hex(6)
    return f"sdk_{prefix}_{secrets.token_urlsafe(32)}", prefix


def hash_token(token: str) -> str:
    """The hex SHA-256 of ``token``: what the warehouse stores and looks keys up by."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class KeyView:
    """A key as listed: never the token, only its prefix and its life."""

    prefix: str
    lender_id: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    status: str
    """``active``, ``expiring`` (rotated, inside its grace period), ``expired`` or ``revoked``."""

    @classmethod
    def of(cls, key: LenderKey, at: dt.datetime) -> KeyView:
        return cls(
            key.prefix, key.lender_id, key.created_at, key.expires_at, key.revoked_at, status_at(key, at)
        )


def status_at(key: LenderKey, at: dt.datetime) -> str:
    """What ``key`` is at ``at``: ``revoked``, ``expired``, ``expiring`` or ``active``."""
    if key.revoked_at is not None and key.revoked_at <= at:
        return "revoked"
    if key.expires_at is not None:
        return "expired" if key.expires_at <= at else "expiring"
    return "active"


def issue_key(session: Session, lender_id: str, *, at: dt.datetime) -> tuple[str, LenderKey]:
    """A new valid key for ``lender_id``; returns the token (to show once) and the stored row."""
    if session.get(Lender, lender_id) is None:
        raise UnknownKey(f"unknown lender {lender_id!r}; register it first: dossier lender add {lender_id}")
    token, prefix = new_token()
    key = LenderKey(lender_id=lender_id, prefix=prefix, key_sha256=hash_token(token), created_at=at)
    session.add(key)
    session.flush()
    return token, key


def add_lender(
    session: Session, lender_id: str, *, name: str | None = None, at: dt.datetime
) -> tuple[str, Lender]:
    """Register lender ``lender_id`` (display ``name``, default the id) with its first key.

    Returns the token, to show once. An id that is malformed or already registered raises
    :class:`~warehouse.errors.InputError` and changes nothing.
    """
    if not LENDER_ID.match(lender_id):
        raise InputError(
            f"lender id {lender_id!r} is not valid: use 2-64 lowercase letters, digits and hyphens, "
            "starting with a letter or digit (e.g. northwind-capital)"
        )
    if session.get(Lender, lender_id) is not None:
        raise InputError(
            f"lender {lender_id!r} is already registered; to give it a new key: "
            f"dossier lender rotate-key --lender {lender_id}"
        )
    lender = Lender(lender_id=lender_id, name=(name or lender_id).strip() or lender_id, created_at=at)
    session.add(lender)
    session.flush()
    token, _key = issue_key(session, lender_id, at=at)
    return token, lender


def list_keys(session: Session, lender_id: str, *, at: dt.datetime) -> list[KeyView]:
    """Every key of ``lender_id``, oldest first, with its status at ``at``."""
    query = (
        select(LenderKey).where(LenderKey.lender_id == lender_id).order_by(LenderKey.created_at, LenderKey.id)
    )
    return [KeyView.of(key, at) for key in session.scalars(query)]


def rotate_key(
    session: Session, lender_id: str, *, at: dt.datetime, grace: dt.timedelta = DEFAULT_GRACE
) -> tuple[str, LenderKey]:
    """Issue a new key and let every key valid now expire ``grace`` after ``at`` (zero: at once).

    A key already expiring keeps the earlier of its end and the new one. Returns the new token.
    """
    if grace < dt.timedelta(0) or grace > MAX_GRACE:
        raise InputError(f"grace period {grace} must be between 0 and {MAX_GRACE.days} days")
    token, fresh = issue_key(session, lender_id, at=at)
    ends = at + grace
    valid = select(LenderKey).where(
        LenderKey.lender_id == lender_id,
        LenderKey.id != fresh.id,
        LenderKey.revoked_at.is_(None),
        or_(LenderKey.expires_at.is_(None), LenderKey.expires_at > ends),
    )
    changed(session)
    for key in session.scalars(valid):
        key.expires_at = ends
    session.flush()
    return token, fresh


def revoke_key(session: Session, prefix: str, *, at: dt.datetime, lender_id: str | None = None) -> LenderKey:
    """Revoke the key named by ``prefix`` at ``at`` (again: no change).

    With ``lender_id``, a key of another lender is refused (:class:`KeyNotValid`): a lender revokes
    only its own keys.
    """
    key = session.scalars(select(LenderKey).where(LenderKey.prefix == prefix)).first()
    if key is None:
        raise UnknownKey(f"no key with prefix {prefix!r} (see: dossier lender keys --lender ID)")
    if lender_id is not None and key.lender_id != lender_id:
        raise KeyNotValid(f"key {prefix!r} is not a key of lender {lender_id!r}")
    if key.revoked_at is None:
        changed(session)
        key.revoked_at = at
        session.flush()
    return key


_BY_HASH = select(LenderKey).where(LenderKey.key_sha256 == bindparam("digest"))


def authenticate(session: Session, token: str, *, at: dt.datetime) -> LenderKey:
    """The key ``token`` is, if it is valid at ``at``.

    Raises :class:`UnknownKey` when no such key was issued and :class:`KeyNotValid` when it was
    revoked or its grace period after a rotation has ended.
    """
    key = session.scalars(_BY_HASH, {"digest": hash_token(token)}).first()
    if key is None:
        raise UnknownKey("API key not known")
    check(key, at)
    return key


def check(key: LenderKey, at: dt.datetime) -> None:
    """Raise :class:`KeyNotValid` if ``key`` is revoked or expired at ``at``."""
    status = status_at(key, at)
    if status == "revoked":
        raise KeyNotValid(f"API key {key.prefix} was revoked")
    if status == "expired":
        raise KeyNotValid(f"API key {key.prefix} expired after its rotation; use the new key")


class KeyCache:
    """Keys :func:`authenticate` verified in this process, by the SHA-256 of their token, so that a
    request of a key verified less than ``seconds`` ago costs no warehouse query.

    What is kept is a copy of the key row (``revoked_at``, ``expires_at``), and each use checks it
    again at the request's instant (:func:`status_at`): the end of a rotation's grace period is
    exact. A revocation or a rotation made in this process (:func:`changed`) empties every cache of
    the process at once; one made in another process (another service worker, ``dossier lender
    revoke-key``) is seen at the latest ``seconds`` after its commit, when the key is verified
    again. ``seconds`` 0 keeps nothing: every use queries the warehouse. Only valid keys are kept
    (an unknown or refused token is looked up each time), at most ``max_keys``, least recently used
    dropped first. Thread-safe.
    """

    def __init__(self, seconds: float, max_keys: int = 10_000) -> None:
        self.ttl = dt.timedelta(seconds=seconds)
        self.max_keys = max_keys
        self._keys: OrderedDict[str, tuple[LenderKey, dt.datetime, int]] = OrderedDict()
        self._generation = generation()
        self._lock = threading.Lock()

    def get(self, token: str, *, at: dt.datetime) -> LenderKey | None:
        """The kept key of ``token`` if it was verified within the bound before ``at`` and no
        revocation or rotation happened here since; raises :class:`KeyNotValid` when the kept key
        is no longer valid at ``at``; None when the warehouse must be asked."""
        if not self.ttl:
            return None
        digest = hash_token(token)
        with self._lock:
            if self._generation != generation():
                self._keys.clear()
                self._generation = generation()
            found = self._keys.get(digest)
            if found is None:
                return None
            key, verified_at, _ = found
            if not verified_at <= at < verified_at + self.ttl:
                del self._keys[digest]
                return None
            self._keys.move_to_end(digest)
        try:
            check(key, at)
        except KeyNotValid:
            with self._lock:
                self._keys.pop(digest, None)
            raise
        return key

    def put(self, token: str, key: LenderKey, *, at: dt.datetime, seen: int) -> None:
        """Keep a copy of ``key``, verified at ``at`` by a lookup that began at generation ``seen``
        (nothing is kept if a revocation or rotation happened here meanwhile)."""
        if not self.ttl:
            return
        copy = LenderKey(
            id=key.id,
            lender_id=key.lender_id,
            prefix=key.prefix,
            key_sha256=key.key_sha256,
            created_at=key.created_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
        )
        with self._lock:
            if seen != generation():
                return
            self._keys[key.key_sha256] = (copy, at, seen)
            self._keys.move_to_end(key.key_sha256)
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)

    def __len__(self) -> int:
        return len(self._keys)
