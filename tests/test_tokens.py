"""Per-job callback tokens and bearer-token membership."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest

from webhook_app.infra.callback_tokens import callback_token, matches_any, verify_callback_token

SECRET = "callback-secret-current"
OLD_SECRET = "callback-secret-previous"
JOB = "job-6f1c2d"
OTHER_JOB = "job-6f1c2e"


def test_token_is_url_safe_and_long_enough() -> None:
    token = callback_token(SECRET, JOB)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert len(token) * 6 >= 128


def test_token_is_the_truncated_hmac_of_the_job_id() -> None:
    digest = hmac.new(SECRET.encode(), b"callback:" + JOB.encode(), hashlib.sha256).digest()
    expected = base64.urlsafe_b64encode(digest).decode()[: len(callback_token(SECRET, JOB))]
    assert callback_token(SECRET, JOB) == expected


def test_token_is_deterministic() -> None:
    assert callback_token(SECRET, JOB) == callback_token(SECRET, JOB)


def test_token_differs_per_job_and_per_secret() -> None:
    tokens = {
        callback_token(SECRET, JOB),
        callback_token(SECRET, OTHER_JOB),
        callback_token(OLD_SECRET, JOB),
        callback_token(OLD_SECRET, OTHER_JOB),
    }
    assert len(tokens) == 4


def test_tokens_for_many_jobs_do_not_collide() -> None:
    tokens = {callback_token(SECRET, f"job-{n}") for n in range(2000)}
    assert len(tokens) == 2000


@pytest.mark.parametrize("signer", [SECRET, OLD_SECRET])
def test_rotated_secrets_all_verify(signer: str) -> None:
    assert verify_callback_token((SECRET, OLD_SECRET), JOB, callback_token(signer, JOB))


def test_a_retired_secret_no_longer_verifies() -> None:
    assert not verify_callback_token((SECRET,), JOB, callback_token(OLD_SECRET, JOB))


@pytest.mark.parametrize(
    "token",
    [
        callback_token(SECRET, OTHER_JOB),
        callback_token("someone-elses-secret", JOB),
        callback_token(SECRET, JOB)[:-1],
        callback_token(SECRET, JOB) + "A",
        callback_token(SECRET, JOB).upper(),
        "",
        "x" * 5000,
        "jöb-tökén",
    ],
)
def test_a_wrong_token_is_refused(token: str) -> None:
    assert not verify_callback_token((SECRET, OLD_SECRET), JOB, token)


def test_no_secrets_verify_nothing() -> None:
    assert not verify_callback_token((), JOB, callback_token(SECRET, JOB))


def test_secrets_may_be_any_iterable() -> None:
    secrets = iter([OLD_SECRET, SECRET])
    assert verify_callback_token(secrets, JOB, callback_token(SECRET, JOB))


def test_matches_any_accepts_only_a_listed_token() -> None:
    known = ("token-alpha", "token-beta")
    assert matches_any(known, "token-beta")
    assert matches_any(known, "token-alpha")
    assert not matches_any(known, "token-gamma")
    assert not matches_any(known, "token-bet")
    assert not matches_any(known, "")
    assert not matches_any((), "token-alpha")
