"""API keys: stored only as hashes, looked up by hash, revoked and expired keys refused."""

from datetime import timedelta

import pytest
from sqlalchemy import text

from entitlements import Unauthorized, authorize_and_consume
from entitlements.accounts import create_key, create_user, revoke_key
from entitlements.keys import hash_key
from entitlements.schema import utcnow


def test_plaintext_is_never_stored(db):
    _, key = create_user(db, "a@x", "free")
    with db.connect() as c:
        tables = [t for t in ("users", "api_keys", "subscriptions", "usage_events")]
        dump = " ".join(str(row) for t in tables for row in c.execute(text(f"SELECT * FROM {t}")))
        stored = c.execute(text("SELECT key_hash, display_prefix FROM api_keys")).one()
    assert key not in dump and key[12:] not in dump
    assert stored == (hash_key(key), key[:12])
    assert len(key) > 40  # 256 random bits


def test_unknown_revoked_and_expired_keys(db):
    _, key = create_user(db, "b@x", "free")
    for bad in (None, "", "Bearer x", "lsk_" + "A" * 43):
        with pytest.raises(Unauthorized):
            authorize_and_consume(db, "stem_split", api_key=bad)
    assert revoke_key(db, key[:12]) == 1
    with pytest.raises(Unauthorized, match="revoked"):
        authorize_and_consume(db, "stem_split", api_key=key)
    short = create_key(db, "b@x", expires_at=utcnow() + timedelta(seconds=1))
    authorize_and_consume(db, "stem_split", api_key=short)
    with pytest.raises(Unauthorized, match="expired"):
        authorize_and_consume(db, "stem_split", api_key=short, now=utcnow() + timedelta(seconds=5))


def test_several_active_keys(db):
    _, first = create_user(db, "c@x", "free")
    second = create_key(db, "c@x")
    assert authorize_and_consume(db, "stem_split", api_key=first).user_id == \
        authorize_and_consume(db, "stem_split", api_key=second).user_id
