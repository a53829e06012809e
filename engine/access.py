"""Access control: which policy a read runs under.

Every read made for an agent (current, as-of and query-aware views, search, subscriptions, log
reads with `agent=`) goes through `reader_policy`. Two kinds of reader:

    the agent itself     the policy in force at the view's position (budget, weights, pinned:
                         what makes the view byte-identical to the one served then), narrowed by
                         the grants the agent holds *now* (a revoked grant is revoked for the
                         past too) and by every subject forgotten by now (a tombstone reaches
                         back: an agent never reads forgotten data, at any position)
    an auditor           a principal whose current policy has `role = "auditor"` reads any
                         agent's view exactly as it was at a position, tombstoned data included
                         (purged data is gone for everyone)

A read that is not allowed at all raises AccessDenied; a read that is allowed never contains an
item or event the reader may not see (filters run before anything is scored or returned).
"""
from __future__ import annotations

import dataclasses
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from .config import AgentPolicy, Config
from .errors import AccessDenied


def no_policy(cfg: Config, agent: str, seq: int | None) -> AccessDenied:
    """The error for an agent the config (at `seq`, or the current one) has no policy for."""
    names = ", ".join(sorted(cfg.agents)) or "none"
    where = "in the current config" if seq is None else f"at seq {seq}"
    return AccessDenied(f"no policy for agent {agent!r} {where} (agents: {names}); "
                        "add [agents.<name>] to ctxdb.toml")


class _System:
    """ctxdb's own audit and replay: reads history as an auditor would, without a config entry."""

    def __repr__(self) -> str:
        return "<ctxdb system auditor>"


SYSTEM_AUDITOR: "str" = _System()  # type: ignore[assignment]  # an object, so no name can forge it


def check_auditor(cfg_now: Config, auditor: str) -> AgentPolicy | None:
    if auditor is SYSTEM_AUDITOR:
        return None
    if not isinstance(auditor, str):
        raise AccessDenied(f"auditor must be a principal's name, got {auditor!r}")
    pol = cfg_now.agent(auditor)
    if pol is None or pol.role != "auditor":
        why = "has no policy" if pol is None else f"has role {pol.role!r}"
        raise AccessDenied(f"{auditor!r} {why}: only a principal with role = \"auditor\" in the current "
                           "config may read other agents' history (add [agents.<name>] role = \"auditor\")")
    return pol


def reader_policy(cfg_then: Config, cfg_now: Config, agent: str, seq: int, *, auditor: str | None,
                  forgotten: Iterable[str] = ()) -> AgentPolicy:
    """The policy a read of `agent`'s view at `seq` runs under (see the module doc)."""
    then = cfg_then.agent(agent)
    if then is None:
        raise no_policy(cfg_then, agent, seq)
    if auditor is not None:
        check_auditor(cfg_now, auditor)
        return then
    now = cfg_now.agent(agent)
    if now is None:
        raise AccessDenied(f"agent {agent!r} has no policy in the current config: its grants were revoked, "
                           "so it may not read its past views either (an auditor may: pass auditor=)")
    exclude = frozenset(forgotten)
    same_grants = now.subjects == then.subjects
    kinds = tuple(k for k in then.kinds if k in now.kinds)
    deny = tuple(dict.fromkeys(then.deny_tags + now.deny_tags))
    if then.allow_tags is None:
        allow = now.allow_tags
    elif now.allow_tags is None:
        allow = then.allow_tags
    else:
        allow = tuple(t for t in then.allow_tags if t in now.allow_tags)
    if same_grants and not exclude and kinds == then.kinds and deny == then.deny_tags and allow == then.allow_tags:
        return then
    return dataclasses.replace(then, kinds=kinds, deny_tags=deny, allow_tags=allow,
                               grants=None if same_grants else now.subjects, exclude=exclude)


def subject_mask(subjects: pa.Array | pa.ChunkedArray, pol: AgentPolicy) -> pa.Array:
    """Boolean mask of the rows whose subject `pol` allows (each distinct subject matched once)."""
    uniq = pc.unique(subjects).to_pylist()
    ok = [s for s in uniq if s is not None and pol.allows_subject(s)]
    return pc.is_in(subjects, pa.array(ok, pa.string()))


def filter_versions(tbl: pa.Table, pol: AgentPolicy) -> pa.Table:
    """Drop item-version rows a restricted policy (revoked grants, forgotten subjects) hides;
    the SQL filter has already applied the policy in force at the position."""
    if not pol.restricted or tbl.num_rows == 0:
        return tbl
    return tbl.filter(subject_mask(tbl.column("subject"), pol))


def may_read_subject_glob(pol: AgentPolicy, pattern: str) -> bool:
    """Whether a subject filter a reader asked for can match anything it may see: an exact
    subject must be allowed; a glob is narrowed by the policy, never denied."""
    if "*" in pattern or "?" in pattern:
        return True
    return pol.allows_subject(pattern)


def event_policy(cfg_now: Config, agent: str, forgotten: Iterable[str]) -> AgentPolicy:
    """The policy an agent's log read runs under: its current grants, minus forgotten subjects."""
    pol = cfg_now.agent(agent)
    if pol is None:
        raise no_policy(cfg_now, agent, None)
    return dataclasses.replace(pol, exclude=frozenset(forgotten))


__all__ = ["reader_policy", "check_auditor", "filter_versions", "subject_mask", "event_policy",
           "may_read_subject_glob", "no_policy", "SYSTEM_AUDITOR"]
