"""Database engines: SQLite (embedded default) or PostgreSQL (`DATABASE_URL`, psycopg 3).

SQLite: WAL (readers never block the writer), a 30 s busy timeout, and every transaction
opened with BEGIN IMMEDIATE. pysqlite's default deferred BEGIN takes the write lock only at
the first write, and a read-then-write transaction that loses that race fails at once with
"database is locked" regardless of the busy timeout; taking the lock up front makes
concurrent check-and-consume calls queue on the busy timeout instead.

PostgreSQL: READ COMMITTED is enough, because every consume is one conditional UPDATE that
PostgreSQL re-evaluates on the committed row after a concurrent update.

Schema: SQLModel metadata creates missing tables; `schema_info.version` records the layout.
A database written by another version is refused with a clear message rather than used
half-compatible (see the README: there is one version so far, so there are no migrations).
A nullable column added to a table within a version is added to an existing database in
place (`ALTER TABLE … ADD COLUMN`): older code ignores it, so it needs no new version.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import event, inspect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, create_engine, select

from .schema import SCHEMA_VERSION, SchemaInfo


class SchemaMismatch(RuntimeError):
    pass


def data_dir() -> Path:
    return Path(os.environ.get("LOCOSERVE_DATA_DIR", "data"))


def database_url(url: str | None = None) -> str:
    url = url or os.environ.get("DATABASE_URL") or f"sqlite:///{data_dir() / 'locoserve.db'}"
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def private_file(path: Path) -> None:
    """Create the SQLite file owner-only (0600) before SQLite does (it would use the umask, 0644
    by default: API key hashes and everyone's usage readable by any local user). SQLite gives
    its -wal and -shm files the database file's permissions."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass


def make_engine(url: str | None = None, pool_size: int = 10) -> Engine:
    url = database_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            private_file(Path(path))
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               pool_size=pool_size, max_overflow=pool_size)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            for pragma in ("journal_mode=WAL", "busy_timeout=30000", "foreign_keys=ON", "synchronous=NORMAL"):
                dbapi_conn.execute(f"PRAGMA {pragma}")

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=2 * pool_size, pool_pre_ping=True)


def add_missing_columns(engine: Engine) -> list[str]:
    """Add the nullable columns that the metadata has and an existing table lacks."""
    added = []
    have = inspect(engine)
    for table in SQLModel.metadata.sorted_tables:
        if not have.has_table(table.name):
            continue
        present = {c["name"] for c in have.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable or column.primary_key:
                raise SchemaMismatch(f"table {table.name} lacks the required column {column.name}; "
                                     f"back the database up and follow the upgrade notes in the README")
            ddl = (f"ALTER TABLE {table.name} ADD COLUMN {column.name} "
                   f"{column.type.compile(dialect=engine.dialect)}")
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql(ddl)
            except DBAPIError:  # another process added it first
                if column.name not in {c["name"] for c in inspect(engine).get_columns(table.name)}:
                    raise
            added.append(f"{table.name}.{column.name}")
    return added


def init_db(engine: Engine) -> None:
    """Create missing tables and columns and check (or record) the schema version."""
    SQLModel.metadata.create_all(engine)
    add_missing_columns(engine)
    with Session(engine) as s, s.begin():
        info = s.exec(select(SchemaInfo)).first()
        if info is None:
            s.add(SchemaInfo(id=1, version=SCHEMA_VERSION))
        elif info.version != SCHEMA_VERSION:
            raise SchemaMismatch(f"the database has schema version {info.version}; this build uses "
                                 f"{SCHEMA_VERSION}. Back it up and follow the upgrade notes in the README.")


def session(engine: Engine) -> Session:
    return Session(engine, expire_on_commit=False)
