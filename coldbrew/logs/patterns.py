"""CloudWatch Logs filter patterns for unstructured events: terms, phrases, ``?`` and ``-``.

What coldbrew matches, as CloudWatch does (case-sensitively, each term anywhere in the message):

- ``ERROR``: events that contain ``ERROR``; ``ERROR Exception``: both terms;
- ``"Model failed to load"``: the exact phrase (double quotes; ``\\"`` and ``\\\\`` inside);
- ``?ERROR ?WARN``: events that contain either term;
- ``ERROR -heartbeat``: events with ``ERROR`` but without ``heartbeat``;
- an empty pattern, or ``""``: every event.

JSON patterns (``{ $.level = "error" }``), space-delimited ones (``[ip, user, ...]``), regular
expressions (``%...%``), numeric comparisons and ``?`` terms mixed with required ones are refused
with InvalidParameterException, saying so, rather than matched differently from CloudWatch.
"""

from __future__ import annotations

from dataclasses import dataclass

from coldbrew.logs.errors import InvalidParameterException

SUPPORTED = (
    'coldbrew supports term filter patterns: terms (ERROR), "quoted phrases", ?either ?term and '
    "-excluded terms"
)


@dataclass(frozen=True)
class FilterPattern:
    required: tuple[str, ...] = ()
    any_of: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()

    @property
    def matches_all(self) -> bool:
        return not (self.required or self.any_of or self.excluded)

    def matches(self, message: str) -> bool:
        return (
            all(term in message for term in self.required)
            and (not self.any_of or any(term in message for term in self.any_of))
            and not any(term in message for term in self.excluded)
        )

    def sql(self, column: str = "message") -> tuple[str, list[str]]:
        """The same test as a SQL condition (``instr`` is case-sensitive, as the pattern is)."""
        clauses: list[str] = []
        params: list[str] = []
        for term in self.required:
            clauses.append(f"instr({column}, ?) > 0")
            params.append(term)
        if self.any_of:
            clauses.append("(" + " OR ".join(f"instr({column}, ?) > 0" for _ in self.any_of) + ")")
            params += self.any_of
        for term in self.excluded:
            clauses.append(f"instr({column}, ?) = 0")
            params.append(term)
        return (" AND ".join(clauses) or "1"), params


def parse(pattern: str | None) -> FilterPattern:
    """``pattern`` as a FilterPattern; InvalidParameterException for what coldbrew cannot match."""
    text = (pattern or "").strip()
    if not text or text == '""':
        return FilterPattern()
    kind = {"{": "JSON", "[": "space-delimited", "%": "regular-expression"}.get(text[0])
    if kind is not None:
        raise InvalidParameterException(
            f"Invalid filter pattern '{pattern}': {kind} filter patterns are not supported; {SUPPORTED}."
        )
    required: list[str] = []
    any_of: list[str] = []
    excluded: list[str] = []
    for sign, term in _terms(text, pattern or ""):
        if term in ("&&", "||") and sign == "":
            raise InvalidParameterException(
                f"Invalid filter pattern '{pattern}': && and || are not supported; {SUPPORTED}."
            )
        if term == "":
            continue  # "" matches every event, so it adds no condition
        {"": required, "?": any_of, "-": excluded}[sign].append(term)
    if required and any_of:
        raise InvalidParameterException(
            f"Invalid filter pattern '{pattern}': ?optional terms cannot be combined with required terms "
            f"(use either ?a ?b, or a b); {SUPPORTED}."
        )
    return FilterPattern(tuple(required), tuple(any_of), tuple(excluded))


def _terms(text: str, pattern: str) -> list[tuple[str, str]]:
    """(sign, term) pairs: sign is "", "?" or "-"; quoted terms unescaped."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        sign = ""
        if text[i] in "?-" and i + 1 < n and not text[i + 1].isspace():
            sign, i = text[i], i + 1
        if text[i] == '"':
            term, i = _quoted(text, i, pattern)
        else:
            start = i
            while i < n and not text[i].isspace():
                if text[i] == '"':
                    raise InvalidParameterException(
                        f"Invalid filter pattern '{pattern}': a double quote inside a term; quote the "
                        'whole phrase ("like this").'
                    )
                i += 1
            term = text[start:i]
        out.append((sign, term))
    return out


def _quoted(text: str, i: int, pattern: str) -> tuple[str, int]:
    chars: list[str] = []
    i += 1
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
            chars.append(text[i + 1])
            i += 2
            continue
        if char == '"':
            if i + 1 < len(text) and not text[i + 1].isspace():
                raise InvalidParameterException(
                    f"Invalid filter pattern '{pattern}': a quoted phrase must be followed by a space."
                )
            return "".join(chars), i + 1
        chars.append(char)
        i += 1
    raise InvalidParameterException(f"Invalid filter pattern '{pattern}': a double quote is not closed.")
