"""The rating store: SQLAlchemy 2.x tables, and the engine for a URL (SQLite by default, PostgreSQL by URL).

    store = Store("runs/rate/ratings.db")                 # a path means SQLite
    store = Store("postgresql://rater@db.example/ratings")
    with store.session() as s: ...                          # one transaction, committed on exit

Times are UTC epoch seconds (floats): SQLite has no time-zone-aware timestamp, and a float compares and
subtracts the same on both back ends. The levels of a rating are a JSON object keyed by the rubric's
dimension keys, so a new rubric version needs no schema change.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


def now() -> float:
    return time.time()


class Base(DeclarativeBase):
    pass


class Setting(Base):
    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Study(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    rubric_version: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(Integer, default=0)
    sources: Mapped[dict] = mapped_column(JSON, default=dict)  # the cases and predictions files, with sha256
    created_at: Mapped[float] = mapped_column(Float, default=now)


class Item(Base):
    """One answer to rate: a visit of a case, a task, one system's output."""

    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("study_id", "case_id", "visit", "task", "system"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    case_id: Mapped[str] = mapped_column(String(200))
    visit: Mapped[int] = mapped_column(Integer)
    task: Mapped[str] = mapped_column(String(64))
    master: Mapped[str] = mapped_column(String(200), index=True)
    system: Mapped[str] = mapped_column(String(200))  # never sent to a rater
    label: Mapped[str] = mapped_column(String(8))  # the letter the rater sees, shuffled per case
    case_text: Mapped[str] = mapped_column(Text)
    output: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(500))  # predictions file:line


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    login: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # rater | coordinator
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id"), nullable=True, index=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    lineage: Mapped[list] = mapped_column(JSON, default=list)  # master ids the rater trained under
    credential: Mapped[str] = mapped_column(String(64), default="")
    password_hash: Mapped[str | None] = mapped_column(String(300), nullable=True)
    link_nonce: Mapped[str | None] = mapped_column(String(64), nullable=True)  # one-time link, cleared on use
    created_at: Mapped[float] = mapped_column(Float, default=now)


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("rater_id", "position"), UniqueConstraint("rater_id", "item_id", "repeat"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    rater_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # 1-based order in which the rater sees it
    repeat: Mapped[bool] = mapped_column(Boolean, default=False)  # the hidden second showing of an item


class Rating(Base):
    __tablename__ = "ratings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"), unique=True)
    rubric_version: Mapped[str] = mapped_column(String(64))
    levels: Mapped[dict] = mapped_column(JSON, default=dict)
    total: Mapped[float | None] = mapped_column(Float, nullable=True)
    cannot_judge: Mapped[bool] = mapped_column(Boolean, default=False)
    comment: Mapped[str] = mapped_column(Text, default="")
    seconds: Mapped[float] = mapped_column(Float, default=0.0)  # time spent on the item, summed over visits
    version: Mapped[int] = mapped_column(Integer, default=0)  # one more per save
    updated_at: Mapped[float] = mapped_column(Float, default=now)


class WebSession(Base):
    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float, default=now)
    expires_at: Mapped[float] = mapped_column(Float)


class Audit(Base):
    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Float, default=now, index=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), nullable=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200), default="")
    detail: Mapped[dict] = mapped_column(JSON, default=dict)


def database_url(db: str | Path) -> str:
    """A URL as given; a plain path becomes a SQLite URL; postgresql:// uses psycopg 3."""
    text = str(db)
    if "://" not in text:
        Path(text).expanduser().parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{Path(text).expanduser()}"
    url = make_url(text)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def make_engine(db: str | Path) -> Engine:
    url = database_url(db)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False}, pool_size=20,
                               max_overflow=20)

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record) -> None:
            # WAL lets readers go on while one rating is written; the driver's own transaction handling is
            # turned off so that every transaction starts with BEGIN IMMEDIATE below.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # a rating shown as saved survives a power cut
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn) -> None:
            # A deferred transaction that reads and then writes fails at once with "database is locked" when
            # another writer got in between; taking the write lock up front makes it wait its turn instead.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=20, max_overflow=20)


class Store:
    """The engine, the tables and a transaction helper for one database."""

    def __init__(self, db: str | Path):
        self.url = database_url(db)
        self.engine = make_engine(db)
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as s, s.begin():
            yield s

    def secret(self) -> str:
        """The key that signs one-time links; made once and kept in the database, so a restart keeps links valid."""
        with self.session() as s:
            row = s.get(Setting, "link_secret")
            if row is None:
                row = Setting(key="link_secret", value=secrets.token_urlsafe(32))
                s.add(row)
            return row.value

    def close(self) -> None:
        self.engine.dispose()


def audit(s: Session, actor: Account | str, action: str, target: str = "", **detail: Any) -> None:
    """One line of the audit log, in the caller's transaction (so it is written exactly when the change is)."""
    if isinstance(actor, Account):
        s.add(Audit(account_id=actor.id, actor=actor.login, action=action, target=target, detail=detail))
    else:
        s.add(Audit(account_id=None, actor=actor, action=action, target=target, detail=detail))


def study_by_name(s: Session, name: str) -> Study:
    study = s.scalar(select(Study).where(Study.name == name))
    if study is None:
        known = s.scalars(select(Study.name)).all()
        raise ValueError(f"no study named '{name}'; studies: {', '.join(known) or 'none'}")
    return study


__all__ = ["Account", "Assignment", "Audit", "Base", "Item", "Rating", "Setting", "Store", "Study", "WebSession",
           "audit", "database_url", "make_engine", "now", "study_by_name"]
