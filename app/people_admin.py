"""People who sign in, the verbs behind `python -m app people ...` and the web UI's sign-in (app.ui).

Once one person exists, every page asks for a sign-in, and a session's annotator name is the name of the person
who signed in: it cannot be typed or set in the link, so the name on each label, the history shown and what Undo
reaches are that person's own. The shared WORKBENCH_TOKEN no longer signs anyone in then (it names nobody); the
operator's WORKBENCH_ADMIN_TOKEN still does, as the annotator "admin". Without people, nothing changes: shared
tokens (or none) and a typed name, which is not verified (the sidebar says so).

A token is given once, in the sign-in box. A link does not take a token (`?token=` would stay in the browser's
history and in proxy logs); `people link NAME` gives a one-time link instead (`?signin=CODE`, 15 minutes).
"""
from __future__ import annotations

from dataclasses import dataclass

from app.errors import WorkbenchError
from storage import people
from storage.db import Database

ADMIN_NAME = "admin"  # the annotator name of a session signed in with WORKBENCH_ADMIN_TOKEN while people exist
ROLES = people.ROLES


@dataclass(frozen=True)
class SignIn:
    """Who a browser session is: a person (person_id set), or a holder of a shared token from the environment."""

    role: str
    name: str | None  # the annotator name the sign-in fixes; None: the session types its own (no people)
    person_id: int | None = None


def add(db: Database, name: str, role: str) -> tuple[people.PersonView, str]:
    with db.write() as s:
        return people.add_person(s, name, role)


def new_token(db: Database, name: str) -> str:
    with db.write() as s:
        return people.new_token(s, name)


def set_role(db: Database, name: str, role: str) -> people.PersonView:
    with db.write() as s:
        return people.set_role(s, name, role)


def remove(db: Database, name: str) -> people.PersonView:
    with db.write() as s:
        return people.remove_person(s, name)


def listing(db: Database) -> list[people.PersonView]:
    with db.read() as s:
        return people.list_people(s)


def anyone(db: Database) -> bool:
    with db.read() as s:
        return people.anyone(s)


def link(db: Database, name: str, base_url: str, minutes: int = people.LINK_MINUTES) -> str:
    """A one-time sign-in link for `name` on the server at `base_url`."""
    if not base_url.startswith(("http://", "https://")):
        raise WorkbenchError(f"the server address must start with http:// or https://, not {base_url!r}")
    with db.write() as s:
        code = people.make_link(s, name, minutes)
    return f"{base_url.rstrip('/')}/?signin={code}"


def by_token(db: Database, token: str) -> SignIn | None:
    with db.read() as s:
        person = people.by_token(s, token)
    return None if person is None else SignIn(person.role, person.name, person.id)


def by_link(db: Database, code: str) -> SignIn | None:
    with db.write() as s:
        person = people.use_link(s, code)
    return None if person is None else SignIn(person.role, person.name, person.id)


def still_valid(db: Database, sign_in: SignIn) -> SignIn | None:
    """A person's sign-in as it stands now (their role may have changed), or None once they were removed."""
    if sign_in.person_id is None:
        return sign_in
    with db.read() as s:
        person = people.by_id(s, sign_in.person_id)
    return None if person is None else SignIn(person.role, person.name, person.id)

