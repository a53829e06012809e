"""Secret redaction ("weed"): applied to text before it enters a context item.

`redact(text)` returns `(clean, redactions)`: every detected secret is replaced by the placeholder
`[REDACTED:<kind>]` and each replacement is recorded as a `Redaction(kind, start, end)` whose
offsets point at the placeholder in the *output*. The guarantee: the secret never appears in the
output, and the record holds only the kind and position, never the secret (nor a hash of it).
Matches that overlap are merged into one placeholder, so no part of a detected secret survives.

Kinds (first listed wins when two start at the same offset):

    private_key          PEM / OpenSSH / PGP private key block, BEGIN..END (to end of text if
                         the END line is missing); multi-line, the whole block is replaced
    jwt                  eyJ<header>.<payload>.<signature> (base64url, signature may be empty)
    aws_secret           the 40-char value of aws_secret_access_key = / : ...
    api_key              OpenAI/Anthropic style sk-... / sk-proj-... (must contain a digit),
                         Google AIza..., Stripe sk_live_/sk_test_/rk_live_/rk_test_
    github_token         ghp_ gho_ ghu_ ghs_ ghr_ tokens, github_pat_ fine-grained tokens
    slack_token          xoxb- xoxa- xoxp- xoxr- xoxs- xoxe-
    aws_key              access key ids AKIA.../ASIA... (20 chars)
    url_password         scheme://user:PASSWORD@host: only the password, user and host stay
    bearer_token         the token after "Bearer " (incl. Authorization: Bearer ...)
    basic_auth           the credentials after "Authorization: Basic "
    password_assignment  value of password= / passwd: / pwd= / passphrase: (also DB_PASSWORD=)
    secret_assignment    value of api_key= / apikey: / access_key= / secret= / client_secret: /
                         token= / auth_token: / private_key= ... (pure numbers are not secrets)
    card_number          13-19 digits, contiguous or in groups (4 then 3-6 digits) joined by one
                         kind of separator (space or dash), first digit 2-6, Luhn-valid

Not secrets (left alone): order numbers, prices, dates and ISO timestamps, UUIDs, git SHAs,
e-mail addresses, phone numbers, epoch timestamps, digit runs failing Luhn.

Fast path: the text is lowercased once and checked for trigger substrings; a pattern's regex only
runs when one of its triggers occurs, and clean text is returned as the same object with `()`.
"""
from __future__ import annotations

import re
from typing import Callable, NamedTuple

import msgspec

__all__ = ["Redaction", "redact", "KINDS"]


class Redaction(msgspec.Struct, frozen=True):
    kind: str
    start: int  # offset of the placeholder in the redacted text
    end: int


class _Pattern(NamedTuple):
    kind: str | Callable[[re.Match], str]
    rx: re.Pattern
    triggers: tuple[str, ...]  # lowercase substrings, one of which must occur for rx to run
    group: int = 0
    check: Callable[[re.Match], bool] | None = None  # extra test on the match


_NOT_PH = r"(?!\[REDACTED:)"
_NOT_SECRET = {"null", "none", "nil", "true", "false", "undefined", "n/a", "yes", "no",
               "required", "redacted"}


def _has_digit(m: re.Match) -> bool:
    return any(c.isdigit() for c in m.group())


def _tokenish(m: re.Match) -> bool:  # "Bearer bonds" is prose, "Bearer 9f8e7d6c" is a token
    return len(m.group(1)) >= 20 or any(c.isdigit() for c in m.group(1))


def _secret_value(s: str) -> bool:
    return s.lower() not in _NOT_SECRET and s.strip("*•x.") != ""


def _assign_kind(m: re.Match) -> str:
    k = m.group(1).lower()
    return "password_assignment" if ("pass" in k or k == "pwd") else "secret_assignment"


def _assign_check(m: re.Match) -> bool:
    v = m.group(2)
    if not _secret_value(v):
        return False
    return _assign_kind(m) == "password_assignment" or not re.fullmatch(r"[\d.]+", v)


_PATTERNS: tuple[_Pattern, ...] = (
    _Pattern("private_key", re.compile(
        r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----[\s\S]*?"
        r"(?:-----END[A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----|\Z)"), ("private key",)),
    _Pattern("jwt", re.compile(
        r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), ("eyj",)),
    _Pattern("aws_secret", re.compile(
        r"(?i)aws_?secret_?(?:access_?)?key[\"']?\s*[:=]\s*[\"']?" + _NOT_PH +
        r"([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"), ("secret",), 1),
    _Pattern("api_key", re.compile(r"(?<![\w-])sk-[A-Za-z0-9_-]{20,}"), ("sk-",), 0, _has_digit),
    _Pattern("api_key", re.compile(r"(?<![\w-])AIza[0-9A-Za-z_-]{35}(?![\w-])"), ("aiza",)),
    _Pattern("api_key", re.compile(r"(?<!\w)[sr]k_(?:live|test)_[0-9A-Za-z]{10,}"),
             ("sk_", "rk_")),
    _Pattern("github_token", re.compile(
        r"(?<!\w)(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})"),
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")),
    _Pattern("slack_token", re.compile(r"(?<![\w-])xox[abeprs]-[A-Za-z0-9-]{10,}"), ("xox",)),
    _Pattern("aws_key", re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
             ("akia", "asia")),
    _Pattern("url_password", re.compile(
        r"(?i)\b[a-z][a-z0-9+.-]*://[^\s:/?#@]*:" + _NOT_PH + r"([^\s/?#]+)@"), ("://",), 1),
    _Pattern("bearer_token", re.compile(r"(?i)\bbearer\s+([A-Za-z0-9._~+/-]{8,}=*)"),
             ("bearer",), 1, _tokenish),
    _Pattern("basic_auth", re.compile(r"(?i)\bauthorization[\"']?\s*:\s*[\"']?basic\s+"
                                      r"([A-Za-z0-9+/]{4,}=*)"), ("authorization",), 1),
    _Pattern(_assign_kind, re.compile(
        r"(?i)(pass(?:word|wd|phrase)|pwd|api[_-]?key|apikey|access[_-]?key|"
        r"client[_-]?secret|secret(?:[_-]?key)?|token|private[_-]?key)"
        r"[\"']?\s*[:=]\s*[\"']?" + _NOT_PH + r"([^\s\"'`,;&<>]{3,})"),
        ("pass", "pwd", "key", "secret", "token"), 2, _assign_check),
)
# Coarse pre-check: every pattern's triggers contain one of these ("_" stands for sk_ rk_ gh?_ ...).
_PRECHECK = ("://", "_", "sk-", "key", "pass", "pwd", "secret", "token", "bearer",
             "authorization", "eyj", "akia", "asia", "aiza", "xox")
assert all(any(c in t for c in _PRECHECK) for p in _PATTERNS for t in p.triggers)
_CARD_RUN = re.compile(r"(?<![\w.,])[0-9]+(?:[ -][0-9]+)*(?![\w]|[.,][0-9])")
_DIGITS = re.compile(r"[0-9]+")
KINDS = ("private_key", "jwt", "aws_secret", "api_key", "github_token", "slack_token", "aws_key",
         "url_password", "bearer_token", "basic_auth", "password_assignment",
         "secret_assignment", "card_number")


def _luhn(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = ord(c) - 48
        if i & 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_at(text: str, groups: list[tuple[int, int]], i: int) -> int:
    """Index of the last group of the longest card starting at group i, or -1."""
    for j in range(min(len(groups) - 1, i + 4), i - 1, -1):
        s, e = groups[i][0], groups[j][1]
        digits = "".join(text[a:b] for a, b in groups[i:j + 1])
        if not 13 <= len(digits) <= 19 or digits[0] not in "23456":
            continue
        if j > i:
            seps = {text[groups[k][1]] for k in range(i, j)}
            if (groups[i][1] - groups[i][0] != 4 or len(seps) != 1
                    or any(not 3 <= b - a <= 6 for a, b in groups[i + 1:j + 1])):
                continue
        if _luhn(digits):
            return j
    return -1


def _cards(text: str, found: list) -> None:
    for run in _CARD_RUN.finditer(text):
        groups = [m.span() for m in _DIGITS.finditer(text, run.start(), run.end())]
        i = 0
        while i < len(groups):
            j = _card_at(text, groups, i)
            if j >= 0:
                found.append((groups[i][0], len(_PATTERNS), groups[j][1], "card_number"))
                i = j + 1
            else:
                i += 1


def redact(text: str) -> tuple[str, tuple[Redaction, ...]]:
    """Replace every detected secret in `text` by `[REDACTED:<kind>]`; see the module doc."""
    low = text.lower()
    trig = False
    for t in _PRECHECK:
        if t in low:
            trig = True
            break
    b = text.encode("utf-8", "surrogatepass")
    digits = len(b) - len(b.translate(None, b"0123456789")) >= 13  # a card has 13+ digits
    if not trig and not digits:
        return text, ()
    found: list[tuple[int, int, int, str]] = []  # (start, priority, end, kind)
    if trig:
        for prio, p in enumerate(_PATTERNS):
            if not any(t in low for t in p.triggers):
                continue
            for m in p.rx.finditer(text):
                s, e = m.span(p.group)
                if s == e:
                    continue
                if p.check is not None and not p.check(m):
                    continue
                found.append((s, prio, e, p.kind(m) if callable(p.kind) else p.kind))
    if digits:
        _cards(text, found)
    if not found:
        return text, ()
    found.sort()
    merged: list[list] = []
    for s, _, e, kind in found:
        if merged and s < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e, kind])
    out, recs, pos, olen = [], [], 0, 0
    for s, e, kind in merged:
        out.append(text[pos:s])
        olen += s - pos
        ph = f"[REDACTED:{kind}]"
        out.append(ph)
        recs.append(Redaction(kind, olen, olen + len(ph)))
        olen += len(ph)
        pos = e
    out.append(text[pos:])
    return "".join(out), tuple(recs)
