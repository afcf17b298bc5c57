"""The trust policy: which signers may publish which names.

Read from two places, both optional:

* ``trust`` in ``$SIMPLEX_HOME/config.json`` (the machine's policy), and
* ``[trust]`` in ``simplex.toml`` of the project, or of the current directory (the
  project's policy), handed in already parsed: the project package reads that file.

Format (TOML shown; config.json holds the same structure as JSON)::

    [trust]
    keys = ["ed25519:..."]                        # trusted for every name
    identities = [{ identity = "https://github.com/org/repo/.github/workflows/release.yml@refs/heads/main",
                    issuer = "https://token.actions.githubusercontent.com" }]
    signing_key = "~/.simplex/keys/sxpm.key"      # what `sxpm sign`/publish use by default

    [[trust.rules]]                               # names matching a pattern (fnmatch)
    pattern = "simplex-*"
    keys = ["ed25519:..."]
    identities = []

Within one file the *first* rule whose pattern matches a name decides; the global
``keys``/``identities`` apply to names no rule matches. Rules can therefore narrow
trust for some names. Across the two files, trust adds up: a signer trusted for a
name by either file is accepted. A name that no rule and no global entry covers is
not checked at all (no policy, no enforcement).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sxpm.errors import TrustPolicyError
from sxpm.home import Home
from sxpm.trust.keys import parse_key_id

PROJECT_FILE = "simplex.toml"


@dataclass(frozen=True, order=True)
class SigstoreIdentity:
    """A keyless signer: the certificate's identity (SAN) and the OIDC issuer."""

    identity: str
    issuer: str

    def __str__(self) -> str:
        return f"sigstore identity {self.identity} (issuer {self.issuer})"


@dataclass(frozen=True)
class Rule:
    pattern: str
    keys: frozenset[str] = frozenset()
    identities: frozenset[SigstoreIdentity] = frozenset()

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.pattern)


@dataclass(frozen=True)
class Requirement:
    """The signers accepted for an artifact (any one of them suffices)."""

    names: tuple[str, ...]
    keys: frozenset[str]
    identities: frozenset[SigstoreIdentity]

    def describe(self) -> str:
        items = [f"a signature by key {k}" for k in sorted(self.keys)]
        items += [f"a Sigstore signature by {i.identity} (issuer {i.issuer})"
                  for i in sorted(self.identities)]
        if not items:
            return "a signer trusted for all of " + ", ".join(self.names) + " (none is)"
        return " or ".join(items)


@dataclass(frozen=True)
class SourcePolicy:
    """The policy of one file: ordered rules, then the global entries."""

    source: str
    rules: tuple[Rule, ...] = ()
    default: Rule | None = None

    def rule_for(self, name: str) -> Rule | None:
        for rule in self.rules:
            if rule.matches(name):
                return rule
        return self.default


@dataclass(frozen=True)
class TrustPolicy:
    sources: tuple[SourcePolicy, ...] = ()
    signing_key: str | None = field(default=None)

    def trusted_for(self, name: str) -> tuple[frozenset[str], frozenset[SigstoreIdentity]] | None:
        """Keys and identities trusted for ``name``; None when no source covers it."""
        found = [r for r in (s.rule_for(name) for s in self.sources) if r is not None]
        if not found:
            return None
        keys = frozenset().union(*(r.keys for r in found))
        identities = frozenset().union(*(r.identities for r in found))
        return keys, identities

    def covers(self, name: str) -> bool:
        return self.trusted_for(name) is not None

    def covers_anything(self) -> bool:
        """Whether any rule exists at all: without one, no signature is looked for."""
        return any(s.rules or s.default is not None for s in self.sources)

    def requirement(self, names: Iterable[str]) -> Requirement | None:
        """Signers trusted for *every* covered name; None when no name is covered.

        Checking more than one name (the artifact's own and the repository it was
        asked for under) keeps a registry from escaping the policy by serving an
        artifact under a name that no rule covers.
        """
        unique = tuple(dict.fromkeys(n for n in names if n))
        covered = [t for t in (self.trusted_for(n) for n in unique) if t is not None]
        if not covered:
            return None
        keys = covered[0][0].intersection(*(c[0] for c in covered[1:]))
        identities = covered[0][1].intersection(*(c[1] for c in covered[1:]))
        return Requirement(unique, keys, identities)


def _strings(value: Any, source: str, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TrustPolicyError(source, f"{what} must be a list of strings")
    return list(value)


def _identities(value: Any, source: str, what: str) -> frozenset[SigstoreIdentity]:
    if value is None:
        return frozenset()
    if not isinstance(value, list):
        raise TrustPolicyError(source, f"{what} must be a list of {{identity, issuer}} tables")
    out = set()
    for i, item in enumerate(value):
        if not (isinstance(item, dict) and isinstance(item.get("identity"), str)
                and isinstance(item.get("issuer"), str)
                and item["identity"] and item["issuer"]):
            raise TrustPolicyError(source, f"{what}[{i}] needs string 'identity' and 'issuer'",
                                   hint='write { identity = "...", issuer = "https://..." }')
        out.add(SigstoreIdentity(item["identity"], item["issuer"]))
    return frozenset(out)


def _keys(value: Any, source: str, what: str) -> frozenset[str]:
    # Normalise (hex or base64 in, base64 out) so comparisons are exact.
    return frozenset(parse_key_id(k, f"{k!r} ({what} in {source})").id
                     for k in _strings(value, source, what))


def parse_policy(obj: Any, source: str) -> SourcePolicy:
    if obj is None:
        return SourcePolicy(source)
    if not isinstance(obj, dict):
        raise TrustPolicyError(source, "trust must be a table")
    rules = []
    raw_rules = obj.get("rules", [])
    if not isinstance(raw_rules, list):
        raise TrustPolicyError(source, "trust.rules must be an array of tables")
    for i, item in enumerate(raw_rules):
        what = f"trust.rules[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("pattern"), str) \
                or not item["pattern"]:
            raise TrustPolicyError(source, f"{what} needs a string 'pattern'")
        rule = Rule(item["pattern"], _keys(item.get("keys"), source, f"{what}.keys"),
                    _identities(item.get("identities"), source, f"{what}.identities"))
        if not rule.keys and not rule.identities:
            raise TrustPolicyError(source, f"{what} ({rule.pattern!r}) trusts no key and no "
                                   "identity", hint="list keys or identities, or remove it")
        rules.append(rule)
    keys = _keys(obj.get("keys"), source, "trust.keys")
    identities = _identities(obj.get("identities"), source, "trust.identities")
    default = Rule("*", keys, identities) if keys or identities else None
    return SourcePolicy(source, tuple(rules), default)


def load_policy(home: Home, project_trust: Any = None,
                project_source: str = PROJECT_FILE) -> TrustPolicy:
    """The policy of ``home``'s config plus a project's ``[trust]`` table.

    ``project_trust`` is the table as the caller already parsed it from
    ``simplex.toml`` (see :mod:`sxpm.project.manifest`): this module reads no project
    file. A workflow loads the policy once per command and passes it on.
    """
    sources = []
    signing_key = None
    for trust, source in ((home.config().get("trust"), str(home.config_path)),
                          (project_trust, project_source)):
        if trust is None:
            continue
        sources.append(parse_policy(trust, source))
        if isinstance(trust, dict) and isinstance(trust.get("signing_key"), str):
            signing_key = trust["signing_key"]
    return TrustPolicy(tuple(sources), signing_key)
