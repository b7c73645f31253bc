"""How long a submission waits (serve_app/waiting.py) and the signed stem links
(serve_app/links.py), as plain functions; their HTTP behaviour is tested in test_service.py."""

import pytest

from serve_app.links import LinkSigner, load_secret
from serve_app.waiting import parse_wait, prefer_wait, wait_seconds


def test_the_wait_field_takes_words_or_seconds():
    assert [parse_wait(v) for v in ("true", "Yes", "false", "off", "0", "12.5", None)] == \
        [True, True, False, False, 0.0, 12.5, None]
    for bad in ("soon", "-1", "nan", "inf"):
        with pytest.raises(ValueError):
            parse_wait(bad)


def test_prefer_wait_and_respond_async():
    assert prefer_wait("wait=10") == 10.0
    assert prefer_wait("respond-async, wait=5") == 5.0
    assert prefer_wait("respond-async") == 0.0
    assert prefer_wait("handling=lenient; wait=3") == 3.0
    assert prefer_wait("wait=soon") is None and prefer_wait(None) is None  # not understood: ignored


def test_the_cap_and_which_source_decides():
    assert wait_seconds(None, None, 50) == (50, False)  # neither: the cap
    assert wait_seconds(True, None, 50) == (50, False)
    assert wait_seconds(False, "wait=30", 50) == (0.0, False)  # the field wins
    assert wait_seconds(500.0, None, 50) == (50, False)
    assert wait_seconds(None, "wait=500", 50) == (50, True)
    assert wait_seconds(None, "wait=7", 50) == (7.0, True)


def test_a_link_is_bound_to_its_job_stem_and_time(tmp_path):
    secret = load_secret(tmp_path, None)
    assert load_secret(tmp_path, None) == secret and (tmp_path / "link-secret").stat().st_mode & 0o777 == 0o600
    signer = LinkSigner(secret, 600)
    token = signer.token("job1", "vocals.wav", signer.expires(now=1000))
    assert signer.check("job1", "vocals.wav", token, now=1500) is None
    assert "expired" in signer.check("job1", "vocals.wav", token, now=1601)
    assert "not valid" in signer.check("job1", "drums.wav", token, now=1500)
    assert "not valid" in signer.check("job2", "vocals.wav", token, now=1500)
    forged = f"{2000}.{token.split('.', 1)[1]}"  # a later expiry on the same signature
    assert "not valid" in signer.check("job1", "vocals.wav", forged, now=1500)
    assert "not valid" in LinkSigner(b"other", 600).check("job1", "vocals.wav", token, now=1500)
    assert "not valid" in signer.check("job1", "vocals.wav", "garbage", now=1500)
