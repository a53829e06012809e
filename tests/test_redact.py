"""Secret redaction (ctxdb.redact): every kind is found and removed, the record carries kind and
placeholder position only, ordinary business text is left alone, and a planted secret never
survives (hypothesis)."""
from __future__ import annotations

import string
from itertools import pairwise

import msgspec
import pytest
from ctxdb.redact import KINDS, Redaction, redact
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
       ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx4Qm1pT9aZ3y\nQm9yZSBzZWNyZXQga2V5IGJ5dGVz\n"
       "-----END RSA PRIVATE KEY-----")

# (text, kind, secret): the secret must vanish, the rest of the text must stay.
CASES = [
    ("use sk-proj-Ab3dEfGh1jKlMnOpQrStUvWxYz0 for the bot", "api_key", "sk-proj-Ab3dEfGh1jKlMnOpQrStUvWxYz0"),
    ("OPENAI_KEY sk-4xT9bQ2mZ7kL1pR8sV3nW6yH0cJ5dF then", "api_key", "sk-4xT9bQ2mZ7kL1pR8sV3nW6yH0cJ5dF"),
    ("maps key AIzaSyD-1234567890abcdefghijklmnopqrstu in config", "api_key",
     "AIzaSyD-1234567890abcdefghijklmnopqrstu"),
    ("charge with sk_live_4eC39HqLyjWDarjtT1zdp7dc now", "api_key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("restricted rk_live_51HxQ2bK9zLmNoPqRsTu ok", "api_key", "rk_live_51HxQ2bK9zLmNoPqRsTu"),
    ("clone with ghp_abcdefghijklmnopqrstuvwxyz0123456789 please", "github_token",
     "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("oauth gho_ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210 x", "github_token",
     "gho_ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210"),
    ("app ghs_0123456789abcdefghijABCDEFGHIJklmnop y", "github_token",
     "ghs_0123456789abcdefghijABCDEFGHIJklmnop"),
    ("pat github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz z", "github_token",
     "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"),
    ("slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp posted", "slack_token",
     "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp"),
    ("user token xoxp-2222-3333-4444-abcdef0123", "slack_token", "xoxp-2222-3333-4444-abcdef0123"),
    ("key id AKIAIOSFODNN7EXAMPLE in us-east-1", "aws_key", "AKIAIOSFODNN7EXAMPLE"),
    ("session ASIAY34FZKBOKMUTVV7A expires", "aws_key", "ASIAY34FZKBOKMUTVV7A"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret",
     "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("Authorization: Bearer abcd1234efgh5678ijkl", "bearer_token", "abcd1234efgh5678ijkl"),
    ("curl -H 'Authorization: Bearer " + JWT + "' https://api", "jwt", JWT),
    ("token in cookie " + JWT + " was stale", "jwt", JWT),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "basic_auth", "dXNlcjpwYXNzd29yZA=="),
    ("db at postgres://admin:s3cr3tPa55@db.example.com:5432/app", "url_password", "s3cr3tPa55"),
    ("login password=hunter2 failed", "password_assignment", "hunter2"),
    ('{"user": "bob", "password": "Tr0ub4dor&3x"}', "password_assignment", "Tr0ub4dor"),
    ("export DB_PASSWORD=correcthorsebattery", "password_assignment", "correcthorsebattery"),
    ("GET /v1?api_key=9f8e7d6c5b4a3210&page=2", "secret_assignment", "9f8e7d6c5b4a3210"),
    ("apikey: Zm9vYmFyYmF6cXV4", "secret_assignment", "Zm9vYmFyYmF6cXV4"),
    ("client_secret='a1b2c3d4e5f6g7h8'", "secret_assignment", "a1b2c3d4e5f6g7h8"),
    ("GITHUB_TOKEN=abc123def456", "secret_assignment", "abc123def456"),
    ("secret: opensesame42", "secret_assignment", "opensesame42"),
    ("key follows\n" + PEM + "\nthanks", "private_key", "MIIEowIBAAKCAQEAx4Qm1pT9aZ3y"),
    ("paid with 4111 1111 1111 1111 yesterday", "card_number", "4111 1111 1111 1111"),
    ("card 5555-5555-5555-4444 on file", "card_number", "5555-5555-5555-4444"),
    ("amex 378282246310005.", "card_number", "378282246310005"),
    ("amex 3782 822463 10005 ok", "card_number", "3782 822463 10005"),
    ("discover 6011111111111117 ok", "card_number", "6011111111111117"),
]


def placeholder(kind: str) -> str:
    return f"[REDACTED:{kind}]"


def check_offsets(out: str, reds: tuple[Redaction, ...], exact: bool = True) -> None:
    assert list(reds) == sorted(reds, key=lambda r: r.start)
    for a, b in pairwise(reds):
        assert a.end <= b.start
    for r in reds:
        assert r.kind in KINDS
        assert out[r.start:r.end] == placeholder(r.kind)
    if exact:  # no placeholder-looking text in the input
        assert out.count("[REDACTED:") == len(reds)


@pytest.mark.parametrize("text,kind,secret", CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_each_kind_is_redacted(text, kind, secret):
    out, reds = redact(text)
    assert secret in text
    assert secret not in out
    assert secret not in repr(reds) and secret not in msgspec.json.encode(reds).decode()
    assert [r.kind for r in reds] == [kind]
    check_offsets(out, reds)
    assert redact(out) == (out, ())  # idempotent: a placeholder is never a secret


def test_every_documented_kind_has_a_case():
    assert {k for _, k, _ in CASES} == set(KINDS)


def test_record_has_kind_and_position_only():
    assert msgspec.structs.fields(Redaction)[0].name == "kind"
    assert [f.name for f in msgspec.structs.fields(Redaction)] == ["kind", "start", "end"]
    _, reds = redact("password=hunter2")
    assert msgspec.json.decode(msgspec.json.encode(reds[0]), type=Redaction) == reds[0]


def test_assignment_keeps_the_key_and_surroundings():
    assert redact("login password=hunter2 failed")[0] == "login password=[REDACTED:password_assignment] failed"
    out, _ = redact("GET /v1?api_key=9f8e7d6c5b4a3210&page=2")
    assert out == "GET /v1?api_key=[REDACTED:secret_assignment]&page=2"


def test_bearer_keeps_the_header_name():
    out, _ = redact("Authorization: Bearer abcd1234efgh5678ijkl")
    assert out == "Authorization: Bearer [REDACTED:bearer_token]"


def test_url_password_keeps_user_and_host():
    out, _ = redact("db at postgres://admin:s3cr3tPa55@db.example.com:5432/app done")
    assert out == "db at postgres://admin:[REDACTED:url_password]@db.example.com:5432/app done"
    out, _ = redact("redis://:p@ss-w0rd@cache.internal:6379/0")  # empty user, raw @ in password
    assert out == "redis://:[REDACTED:url_password]@cache.internal:6379/0"
    assert redact("see https://example.com:8443/path?q=1 and mailto:bob@example.com")[1] == ()


def test_private_key_block_is_replaced_whole():
    out, _ = redact("before\n" + PEM + "\nafter")
    assert out == "before\n[REDACTED:private_key]\nafter"
    truncated = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nAAAABG5vbmU"
    out, _ = redact("oops " + truncated)  # no END line: redact to the end, leak nothing
    assert out == "oops [REDACTED:private_key]" and "b3BlbnNzaC1rZXktdjEAAAAA" not in out


def test_multiple_secrets_offsets_in_output():
    text = (f"user=bob password=hunter2 key sk-proj-Ab3dEfGh1jKlMnOpQrStUvWxYz0 card "
            f"4111-1111-1111-1111 url https://u:pw12345@h.io/x aws AKIAIOSFODNN7EXAMPLE jwt {JWT}")
    out, reds = redact(text)
    assert [r.kind for r in reds] == ["password_assignment", "api_key", "card_number",
                                      "url_password", "aws_key", "jwt"]
    check_offsets(out, reds)
    for secret in ("hunter2", "Ab3dEfGh1jKl", "4111-1111-1111-1111", "pw12345", "AKIAIOSFODNN7", JWT):
        assert secret not in out
    assert out.startswith("user=bob password=[REDACTED:password_assignment] key [REDACTED:api_key]")
    assert redact(out) == (out, ())


def test_overlapping_matches_leave_nothing_behind():
    out, reds = redact("api_key=sk-proj-Ab3dEfGh1jKlMnOpQrStUvWxYz0!extra")
    assert "Ab3dEfGh1jKl" not in out and "extra" not in out and len(reds) == 1


def test_offsets_when_lowercase_changes_length():
    text = "İİİ Authorization: Bearer abcd1234efgh5678ijkl and password=hunter2"
    assert len(text.lower()) != len(text)
    out, reds = redact(text)
    assert out == ("İİİ Authorization: Bearer [REDACTED:bearer_token] and "
                   "password=[REDACTED:password_assignment]")
    check_offsets(out, reds)


NOT_SECRETS = [
    "Order #10234 was refunded, see order 10235 and invoice INV-2026-00042.",
    "The laptop costs $1,299.00 (was $1,499.99); 3 units = $3,897.00.",
    "Shipped 2026-11-21T10:42:00Z, delivered 2026-11-23 09:15:07+01:00, ETA 2026-11-21 10:00.",
    "request id 123e4567-e89b-12d3-a456-426614174000 and 550e8400-e29b-41d4-a716-446655440000",
    "fixed in 3f786850e387550fdab836ed7e6dc881de23001b (short 3f78685)",
    "mail bob.smith@example.com or support+eu@shop.example.org",
    "call +1 415-555-0123 or (020) 7946 0958, fax 0049 30 1234 5678",
    "epoch 1732147200000 us 1732147200000123, account 1234567890123456789012",
    "tracking 4111 1111 1111 1112 and 5555-5555-5555-4445 and 6011111111111118",  # fail Luhn
    "The key takeaway: ship it. Bearer bonds and the bearer of bad news.",
    "usage: input_token: 1500, output_token=320, password: ******, token=null",
    "Our secretary: Jane. Pass the salt. The passenger passed.",
    "risk-adjusted sk-learn-compatible-transformer-pipelines-and-more",
    "ratio 4111111111111111.50 and x4111111111111111 and 4111111111111111abc",
]


@pytest.mark.parametrize("text", NOT_SECRETS)
def test_business_text_is_left_alone(text):
    assert redact(text) == (text, ())


@pytest.mark.parametrize("text", [
    "The customer asked about delivery times for the new espresso machine.",
    "Der Kunde fragte nach Lieferzeiten für die neue Espressomaschine.",
    "",
])
def test_clean_text_fast_path_returns_same_object(text):
    out, reds = redact(text)
    assert out is text and reds == ()


def luhn_complete(body: str) -> str:
    total = 0
    for i, c in enumerate(reversed(body)):
        d = int(c) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return body + str((10 - total % 10) % 10)


KEY_CHARS = string.ascii_letters + string.digits
api_keys = st.builds(lambda prefix, body, d: prefix + body + d,
                     st.sampled_from(["sk-", "sk-proj-", "ghp_", "sk_live_", "xoxb-"]),
                     st.text(KEY_CHARS, min_size=36, max_size=48), st.sampled_from(string.digits))
cards = st.builds(lambda first, rest, sep: _fmt(luhn_complete(first + rest), sep),
                  st.sampled_from("3456"), st.text(string.digits, min_size=14, max_size=14),
                  st.sampled_from(["", " ", "-"]))


def _fmt(number: str, sep: str) -> str:
    return sep.join(number[i:i + 4] for i in range(0, len(number), 4)) if sep else number


def test_luhn_helper_makes_valid_numbers():
    assert luhn_complete("411111111111111") == "4111111111111111"
    assert luhn_complete("37828224631000") == "378282246310005"


# Random surroundings include fragments that look like the start of other secrets.
noise = st.lists(st.one_of(st.text(max_size=12), st.sampled_from(
    ["password=", "Bearer ", "://u:", "@", "-", " ", "1234 ", "4", ".", ",5", "token: ",
     "[REDACTED:api_key]", "İ", "\n", "eyJ", "AKIA", "-----BEGIN"])), max_size=8).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=noise, after=noise, secret=st.one_of(api_keys, cards))
def test_planted_secret_never_survives(before, after, secret):
    text = f"{before} {secret} {after}"
    out, reds = redact(text)
    assert secret not in out
    assert secret not in repr(reds)
    assert reds
    check_offsets(out, reds, exact=False)
    assert redact(out)[0] == out
