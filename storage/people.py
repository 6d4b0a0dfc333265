"""People who sign in: a name (stored with each of their answers), a role and a token, plus one-time sign-in links.

A token or a link code is made here from 32 random bytes, shown once, and kept only as its SHA-256: a copy of the
database gives no way in. Looking one up by its hash is safe against timing (the hash of a guess says nothing of
the stored hash's neighbours). Removing a person keeps the row, so their labels still name them, and signs them
out everywhere (app.ui checks the person on every page run).
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.errors import StorageError
from storage.models import Person, SignInLink, utcnow

ROLES = ("annotator", "reviewer", "admin")  # each role includes the ones before it
MAX_NAME = 100
LINK_MINUTES = 15


@dataclass(frozen=True)
class PersonView:
    id: int
    name: str
    role: str
    active: bool
    created_at: datetime


def _view(person: Person) -> PersonView:
    return PersonView(person.id, person.name, person.role, person.active, person.created_at)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _new_secret() -> str:
    return secrets.token_urlsafe(32)


def _checked_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise StorageError("a person needs a name")
    if len(name) > MAX_NAME:
        raise StorageError(f"a person's name has at most {MAX_NAME} characters, this one has {len(name)}")
    if not name.isprintable():
        raise StorageError(f"the name {name!r} holds a control character")
    return name


def _checked_role(role: str) -> str:
    if role not in ROLES:
        raise StorageError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    return role


def _get(s: Session, name: str) -> Person:
    person = s.scalar(select(Person).where(Person.name == name))
    if person is None:
        raise StorageError(f"no person named {name!r}")
    return person


def add_person(s: Session, name: str, role: str) -> tuple[PersonView, str]:
    """A new person and their token (shown to the caller once; only its hash is kept)."""
    name, role = _checked_name(name), _checked_role(role)
    if s.scalar(select(Person.id).where(Person.name == name)) is not None:
        raise StorageError(f"a person named {name!r} exists already (give them a new token with `people token`)")
    token = _new_secret()
    person = Person(name=name, role=role, token_sha256=digest(token), active=True)
    s.add(person)
    s.flush()
    return _view(person), token


def new_token(s: Session, name: str) -> str:
    """A fresh token for a person (the old one stops working at once); also makes a removed person active again."""
    person = _get(s, name)
    token = _new_secret()
    person.token_sha256 = digest(token)
    person.active = True
    return token


def set_role(s: Session, name: str, role: str) -> PersonView:
    person = _get(s, name)
    person.role = _checked_role(role)
    return _view(person)


def remove_person(s: Session, name: str) -> PersonView:
    """Sign a person out for good (their answers keep their name); their unused links die with it."""
    person = _get(s, name)
    person.active = False
    s.execute(update(SignInLink).where(SignInLink.person_id == person.id, SignInLink.used_at.is_(None))
              .values(used_at=utcnow()))
    return _view(person)


def list_people(s: Session) -> list[PersonView]:
    return [_view(p) for p in s.scalars(select(Person).order_by(Person.name))]


def anyone(s: Session) -> bool:
    """Whether any active person exists: then every page asks for a sign-in and names come from it."""
    return s.scalar(select(Person.id).where(Person.active).limit(1)) is not None


def by_token(s: Session, token: str) -> PersonView | None:
    """The active person holding `token`, or None."""
    if not token:
        return None
    person = s.scalar(select(Person).where(Person.token_sha256 == digest(token), Person.active))
    return None if person is None else _view(person)


def by_id(s: Session, person_id: int) -> PersonView | None:
    """The person, if still active (a page run checks its signed-in person so)."""
    person = s.get(Person, person_id)
    return None if person is None or not person.active else _view(person)


def make_link(s: Session, name: str, minutes: int = LINK_MINUTES) -> str:
    """A one-time sign-in code for a person, valid for `minutes` (the caller puts it in a link as ?signin=CODE)."""
    if minutes < 1:
        raise StorageError(f"a sign-in link lasts at least 1 minute, not {minutes}")
    person = _get(s, name)
    if not person.active:
        raise StorageError(f"{name!r} was removed; give them a new token first (`people token {name}`)")
    code = _new_secret()
    s.add(SignInLink(person_id=person.id, code_sha256=digest(code), expires_at=utcnow() + timedelta(minutes=minutes)))
    return code


def use_link(s: Session, code: str) -> PersonView | None:
    """The person a one-time code signs in, spending it; None for an unknown, used or expired code. The spend is
    one conditional UPDATE, so two tabs racing with one link sign in once."""
    if not code:
        return None
    now = utcnow()
    link = s.scalar(select(SignInLink).where(SignInLink.code_sha256 == digest(code)))
    if link is None:
        return None
    spent = s.execute(update(SignInLink)
                      .where(SignInLink.id == link.id, SignInLink.used_at.is_(None), SignInLink.expires_at > now)
                      .values(used_at=now))
    if spent.rowcount != 1:
        return None
    return by_id(s, link.person_id)
