"""The handler's thread YAML written directly, for the data it holds — byte for byte what ``yaml.dump(...,
indent=2, allow_unicode=True, default_flow_style=False)`` writes, or None where this module is not sure.

PyYAML's pure-Python emitter (the one the handler runs) costs ~0.15 ms per post; this writes the common shapes in
a few microseconds and leaves everything else to PyYAML. What it writes, from YAML's block style as PyYAML emits it:

- mappings with keys sorted, ``key: value``; a nested mapping on the lines below, indented by 2; sequences under a
  key not indented (``- `` at the key's column); ``{}`` and ``[]`` for empty ones; ints and booleans as YAML words;
- a string plain when plain is certain: one line of printable characters, no leading/trailing or double spaces, no
  indicator (``#``, ``: ``, a leading ``-?:,[]{}&*!|>'"%@```), not a boolean/null word, and a first character no
  number or timestamp resolves from (not a digit, sign, dot, ``~<=``); single-quoted (quotes doubled) when
  an indicator or a YAML 1.1 boolean/null word makes plain impossible; anything else (line breaks, tabs, digits
  first, …) goes back to PyYAML;
- long strings folded as PyYAML folds them: at a single space once the line is past column 80, continuing two
  columns right of the key.

A property test holds the result equal to ``yaml.dump`` on random and real-shaped posts.
"""

from __future__ import annotations

import re
from typing import Any

WIDTH = 80
KEY = re.compile(r"^[a-z_][a-z0-9_]*$")
# The words YAML 1.1 resolves to booleans or null (PyYAML's implicit resolvers): never plain.
RESOLVED_WORDS = frozenset(
    [
        "yes",
        "Yes",
        "YES",
        "no",
        "No",
        "NO",
        "true",
        "True",
        "TRUE",
        "false",
        "False",
        "FALSE",
        "on",
        "On",
        "ON",
        "off",
        "Off",
        "OFF",
        "null",
        "Null",
        "NULL",
        "~",
    ]
)
ALWAYS_INDICATOR_FIRST = set("#,[]{}&*!|>'\"%@`")
# First characters from which an int, float, timestamp, merge or value may resolve (booleans and null resolve
# from whole words only: RESOLVED_WORDS; y/n alone are left to PyYAML).
RESOLVER_FIRST = set("0123456789+-.~<=")
UNSURE_WORDS = frozenset(["y", "Y", "n", "N"])


class Unsure(Exception):
    """This module cannot vouch for PyYAML's output here: the caller asks PyYAML."""


# What YAML calls printable (with allow_unicode): ASCII 0x20-0x7E and the non-ASCII planes, less the BOM.
NOT_PRINTABLE = re.compile("[^\x20-\x7e\xa0-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]")


def printable(text: str) -> bool:
    return NOT_PRINTABLE.search(text) is None


def style_of(text: str) -> str:
    """'' (plain) or "'" (single-quoted) when certain of PyYAML's choice; Unsure otherwise."""
    if not text or not printable(text) or text != text.strip(" ") or "  " in text:
        raise Unsure
    indicator = (
        text[0] in ALWAYS_INDICATOR_FIRST
        or (text[0] in "-?:" and (len(text) == 1 or text[1] == " "))
        or ": " in text
        or " #" in text
        or text.endswith(":")
    )
    if indicator or text in RESOLVED_WORDS:
        return "'"
    if text[0] in RESOLVER_FIRST or text in UNSURE_WORDS or text.startswith(("---", "...")):
        raise Unsure  # an int, float or timestamp may resolve from here; PyYAML knows
    return ""


def scalar(text: str, column: int, indent: int) -> str:
    """``text`` as PyYAML writes it after ``key:`` at ``column``, continuation lines at ``indent``: PyYAML breaks
    at the first space whose column is past WIDTH, so each line is found with one search, not word by word."""
    style = style_of(text)
    body = text.replace("'", "''") if style else text
    column += 1 + len(style)  # the space after the colon, and the opening quote
    lines, start = [], 0
    while True:
        end = body.find(" ", max(start, start + WIDTH - column + 1))
        if end < 0:
            lines.append(body[start:])
            break
        lines.append(body[start:end])
        start, column = end + 1, indent
    return style + ("\n" + " " * indent).join(lines) + style


def value_lines(head: str, value: Any, key_column: int, out: list[str]) -> None:
    """One ``key: value`` entry whose line starts with ``head`` (``key:`` at ``key_column``)."""
    if isinstance(value, dict):
        if not value:
            out.append(head + " {}")
        else:
            out.append(head)
            mapping_lines(value, key_column + 2, " " * (key_column + 2), out)
    elif isinstance(value, list):
        if not value:
            out.append(head + " []")
        else:
            out.append(head)
            sequence_lines(value, key_column, out)
    elif isinstance(value, bool):
        out.append(head + (" true" if value else " false"))
    elif isinstance(value, int):
        out.append(f"{head} {value}")
    elif isinstance(value, str):
        out.append(head + " " + scalar(value, len(head), key_column + 2))
    else:
        raise Unsure


def mapping_lines(mapping: dict[str, Any], column: int, lead: str, out: list[str]) -> None:
    for i, key in enumerate(sorted(mapping)):
        if not isinstance(key, str) or not KEY.match(key) or key in RESOLVED_WORDS:
            raise Unsure
        head = (lead if i == 0 else " " * column) + key + ":"
        value_lines(head, mapping[key], column, out)


def sequence_lines(items: list[Any], column: int, out: list[str]) -> None:
    lead = " " * column + "- "
    for item in items:
        if isinstance(item, dict):
            if not item:
                out.append(lead + "{}")
            else:
                mapping_lines(item, column + 2, lead, out)
        elif isinstance(item, int) and not isinstance(item, bool):
            out.append(f"{lead}{item}")
        else:
            raise Unsure  # strings and lists inside lists: PyYAML's business


def list_item(data: dict[str, Any]) -> str | None:
    """``yaml.dump([data], indent=2, allow_unicode=True, default_flow_style=False)``, or None when unsure."""
    out: list[str] = []
    try:
        if not data:
            return "- {}\n"
        mapping_lines(data, 2, "- ", out)
    except Unsure:
        return None
    return "\n".join(out) + "\n"
