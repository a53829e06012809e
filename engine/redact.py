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
e-mail addresses, phone numbers, epoch timestamps, digit runs failing Luhn, token counts
("input_token: 1500"), masked values ("password: ****", "token=null"), prose ("bearer bonds").
Known gaps: quoted values containing spaces are cut at the first space; URL passwords with a raw
"/" in them; keys of unknown vendors unless written as an assignment.

Fast path (runs on every projected item): text.lower() is searched for a few trigger substrings
and the UTF-8 bytes are translated to spot a 13-character run of digits/spaces/dashes; if neither
occurs the input object itself is returned with (), no regex run. Otherwise only the patterns
whose triggers occur run. Case-insensitive patterns run on text.lower() (same offsets when the
length is unchanged, else an IGNORECASE copy runs on the text). All patterns are linear-time.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

import msgspec

__all__ = ["KINDS", "Redaction", "redact"]


class Redaction(msgspec.Struct, frozen=True):
    kind: str
    start: int  # offset of the placeholder in the redacted text
    end: int


class _Pattern(NamedTuple):
    kind: str | Callable[[re.Match], str]
    rx: re.Pattern  # nocase patterns are written in lower case and run on text.lower()
    triggers: frozenset[str]  # lowercase substrings, one of which must occur for rx to run
    group: int = 0  # the group that is the secret
    check: Callable[[re.Match], bool] | None = None  # extra test on the match
    nocase: bool = False


_NOT_PH = r"(?!\[(?i:redacted):)"  # never re-redact a placeholder (idempotence)
_NOT_SECRET = {"null", "none", "nil", "true", "false", "undefined", "n/a", "yes", "no",
               "required", "redacted"}


def _has_digit(m: re.Match) -> bool:
    return any(c.isdigit() for c in m.group())


def _tokenish(m: re.Match) -> bool:  # "Bearer bonds" is prose, "Bearer 9f8e7d6c" is a token
    return len(m.group(1)) >= 20 or any(c.isdigit() for c in m.group(1))


def _assign_kind(m: re.Match) -> str:
    k = m.group(1).lower()
    return "password_assignment" if ("pass" in k or k == "pwd") else "secret_assignment"


def _assign_check(m: re.Match) -> bool:  # placeholders like ***, null; token counts like 1500
    v = m.group(2)
    if v.lower() in _NOT_SECRET or not v.strip("*•x."):
        return False
    return _assign_kind(m) == "password_assignment" or not re.fullmatch(r"[\d.]+", v)


def _p(kind, rx: str, triggers, group=0, check=None, nocase=False) -> _Pattern:
    return _Pattern(kind, re.compile(rx), frozenset(triggers), group, check, nocase)


_PATTERNS: tuple[_Pattern, ...] = (
    _p("private_key", r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----[\s\S]*?"
       r"(?:-----END[A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----|\Z)", ("private key",)),
    _p("jwt", r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", ("eyj",)),
    _p("aws_secret", r"aws_?secret_?(?:access_?)?key[\"']?\s*[:=]\s*[\"']?" + _NOT_PH +
       r"([a-z0-9/+=]{40})(?![a-z0-9/+=])", ("secret",), 1, nocase=True),
    _p("api_key", r"(?<![\w-])sk-[A-Za-z0-9_-]{20,}", ("sk-",), 0, _has_digit),
    _p("api_key", r"(?<![\w-])AIza[0-9A-Za-z_-]{35}(?![\w-])", ("aiza",)),
    _p("api_key", r"(?<!\w)[sr]k_(?:live|test)_[0-9A-Za-z]{10,}", ("sk_", "rk_")),
    _p("github_token", r"(?<!\w)(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})",
       ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")),
    _p("slack_token", r"(?<![\w-])xox[abeprs]-[A-Za-z0-9-]{10,}", ("xox",)),
    _p("aws_key", r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])", ("akia", "asia")),
    _p("url_password", r"\b[a-z][a-z0-9+.-]{0,30}://[^\s:/?#@]*:" + _NOT_PH + r"([^\s/?#]+)@",
       ("://",), 1, nocase=True),
    _p("bearer_token", r"\bbearer\s+([a-z0-9._~+/-]{8,}=*)", ("bearer",), 1, _tokenish, True),
    _p("basic_auth", r"\bauthorization[\"']?\s*:\s*[\"']?basic\s+([a-z0-9+/]{4,}=*)",
       ("authorization",), 1, nocase=True),
    _p(_assign_kind, r"(pass(?:word|wd|phrase)|pwd|api[_-]?key|apikey|access[_-]?key|"
       r"client[_-]?secret|secret(?:[_-]?key)?|token|private[_-]?key)"
       r"[\"']?\s*[:=]\s*[\"']?" + _NOT_PH + r"([^\s\"'`,;&<>]{3,})",
       ("pass", "pwd", "key", "secret", "token"), 2, _assign_check, True),
)
# Used when lower() changes the length (rare Unicode), so offsets in text.lower() would be off.
_NOCASE = {i: re.compile(p.rx.pattern, re.IGNORECASE) for i, p in enumerate(_PATTERNS) if p.nocase}
_TRIGGERS = frozenset().union(*(p.triggers for p in _PATTERNS))
# Fast path: each trigger contains one of these ("_" stands for sk_ rk_ gh?_ github_pat_).
_PRECHECK = ("://", "_", "sk-", "key", "pass", "pwd", "secret", "token", "bearer",
             "authorization", "eyj", "akia", "asia", "aiza", "xox")
assert all(any(c in t for c in _PRECHECK) for t in _TRIGGERS)
_CARD_RUN = re.compile(r"[0-9][0-9 -]{11,}[0-9]")  # a card is a run of 13+ of these
# bytes.translate maps digits, space and dash to "0": a card needs 13 "0"s in a row.
_CARD_TABLE = bytes(48 if c in b"0123456789 -" else 120 for c in range(256))
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


def _card_at(text: str, groups: list[tuple[int, int]], lens: list[int], i: int) -> int:
    """Index of the last group of the longest card starting at group i, or -1."""
    for j in range(min(len(groups) - 1, i + 4), i - 1, -1):
        if not 13 <= sum(lens[i:j + 1]) <= 19 or text[groups[i][0]] not in "23456":
            continue
        if j > i and (lens[i] != 4 or any(not 3 <= n <= 6 for n in lens[i + 1:j + 1])
                      or any(groups[k + 1][0] - groups[k][1] != 1 for k in range(i, j))
                      or len({text[groups[k][1]] for k in range(i, j)}) != 1):
            continue  # grouped: 4 digits, then groups of 3-6, one single separator kind
        if _luhn("".join(text[a:b] for a, b in groups[i:j + 1])):
            return j
    return -1


def _cards(text: str, found: list) -> None:
    for run in _CARD_RUN.finditer(text):
        s, e = run.span()
        groups = [m.span() for m in _DIGITS.finditer(text, s, e)]
        if s and (text[s - 1].isalnum() or text[s - 1] in "_.,"):
            del groups[0]  # glued to a word or part of a decimal number
        if e < len(text) and (text[e].isalnum() or text[e] == "_"
                              or (text[e] in ".," and text[e + 1:e + 2].isdigit())):
            del groups[-1:]
        lens, i = [b - a for a, b in groups], 0
        while i < len(groups):
            j = _card_at(text, groups, lens, i)
            if j >= 0:
                found.append((groups[i][0], len(_PATTERNS), groups[j][1], "card_number"))
            i = j + 1 if j >= 0 else i + 1


def redact(text: str) -> tuple[str, tuple[Redaction, ...]]:
    """Replace every detected secret in `text` by `[REDACTED:<kind>]`; see the module doc."""
    low = text.lower()
    trig = False
    for t in _PRECHECK:
        if t in low:
            trig = True
            break
    digits = b"0000000000000" in text.encode("utf-8", "surrogatepass").translate(_CARD_TABLE)
    if not trig and not digits:
        return text, ()
    found: list[tuple[int, int, int, str]] = []  # (start, priority, end, kind)
    if trig:
        present = {t for t in _TRIGGERS if t in low}
        same_len = len(low) == len(text)  # then text.lower() maps offsets 1:1
        for prio, p in enumerate(_PATTERNS):
            if p.triggers.isdisjoint(present):
                continue
            rx, src = p.rx, text
            if p.nocase:
                rx, src = (p.rx, low) if same_len else (_NOCASE[prio], text)
            for m in rx.finditer(src):
                s, e = m.span(p.group)
                if s < e and (p.check is None or p.check(m)):
                    found.append((s, prio, e, p.kind(m) if callable(p.kind) else p.kind))
    if digits:
        _cards(text, found)
    if not found:
        return text, ()
    found.sort()
    merged: list[list] = []  # overlapping matches become one placeholder covering both
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
