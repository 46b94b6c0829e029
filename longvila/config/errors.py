"""How config problems are worded: short, one block per problem, each naming the key and the fix.

What: `ConfigError` (a ValueError holding every problem found in one pass, never a schema or config dump),
`unknown_key` (the message for a misspelt key, with difflib's "did you mean"), `as_number` (numbers written
the way people write them, `2e-5`, which YAML 1.1 parsers such as PyYAML leave as strings) and `read_yaml`
(a YAML file whose syntax error names the file, line and column, and a hint). Why: a config mistake should
cost one glance, e.g.

    config 'train.stage4[0].contxt': unknown key; did you mean 'context'?
        valid keys under 'train.stage4[0]': context, rope_theta, max_positions, steps, ...
"""

from __future__ import annotations

import difflib
import re
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

MAX_SHOWN = 12
"""Problems listed in one ConfigError; the rest are counted."""

# a YAML 1.2 number: 2e-5, -1E+6, .5, 3., 10 (no nan/inf, no underscores)
_NUMBER = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


class ConfigError(ValueError):
    """Every problem of one config, each a short block starting "config '<key>': "."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        shown = self.problems[:MAX_SHOWN]
        if len(self.problems) > MAX_SHOWN:
            shown.append(f"... and {len(self.problems) - MAX_SHOWN} more")
        count = f"{len(self.problems)} config problem{'s' if len(self.problems) > 1 else ''}"
        super().__init__("\n".join(([f"{source}: {count}"] if source else []) + shown))


def suggest(name: str, valid: list[str]) -> str | None:
    """The valid name closest to a misspelt one (case and '-' vs '_' ignored), or None."""
    norm = {v.lower().replace("-", "_"): v for v in valid}
    close = difflib.get_close_matches(str(name).lower().replace("-", "_"), list(norm), n=1, cutoff=0.6)
    return norm[close[0]] if close else None


def unknown_key(prefix: str, name: Any, valid: list[str], list_valid: bool = True) -> str:
    """The block for an unknown key `name` under `prefix` ('' = the top level), with the valid keys unless
    `list_valid` is False (a second unknown key of the same section)."""
    key = f"{prefix}.{name}" if prefix else str(name)
    guess = suggest(str(name), valid)
    hint = f"did you mean '{guess}'?" if guess else "check the spelling, or remove it"
    if not list_valid:
        return f"config '{key}': unknown key; {hint}"
    where = f"under '{prefix}'" if prefix else "at the top level"
    listing = textwrap.fill(f"valid keys {where}: {', '.join(valid)}", width=110, initial_indent="    ",
                            subsequent_indent="        ")
    return f"config '{key}': unknown key; {hint}\n{listing}"


def as_number(value: Any, integer: bool, key: str) -> int | float:
    """`value` as the number an int or float field wants; ValueError naming `key` if it is not one.

    Accepts numbers, integral floats for int fields (1e6 -> 1000000) and strings that are YAML 1.2 numbers
    ('2e-5', '-1e6', '1E+3', as a YAML 1.1 parser leaves them); refuses bools and other strings.
    """
    want = "an integer (e.g. 4 or 1e6)" if integer else "a number (e.g. 0.5 or 2e-5)"
    text = value.strip() if isinstance(value, str) else None
    if isinstance(value, bool) or not (isinstance(value, (int, float)) or (text and _NUMBER.fullmatch(text))):
        raise ValueError(f"config '{key}': expected {want}, got {value!r}")
    if not integer:
        return float(value)
    exact = Decimal(text) if text is not None else Decimal(value)
    if exact != exact.to_integral_value():
        raise ValueError(f"config '{key}': expected {want}, got {value!r} (not a whole number)")
    return int(exact)


_HINTS = [  # (words in PyYAML's problem, what usually causes it)
    ("'\\t'", "a tab cannot indent YAML; use spaces"),
    ("mapping values are not allowed", "a value holding ': ' needs quotes; or this line or the one above is "
                                        "indented wrongly or lacks its ':'"),
    ("could not find expected ':'", "a key needs ': ' after it; or the line above is indented wrongly"),
    ("found unexpected end of stream", "a quote is not closed"),
    ("expected ',' or ']'", "a [list] is not closed, or an item holding ',' needs quotes"),
    ("expected ',' or '}'", "a {mapping} is not closed, or a value holding ',' needs quotes"),
    ("expected <block end>", "this line's indentation does not match the lines above it"),
    ("did not find expected", "this line's indentation does not match the lines above it"),
]


def syntax_message(path: str | Path, err: yaml.YAMLError, text: str) -> str:
    """'FILE, line L, column C: <problem> (<hint>)' for a PyYAML error."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
    line = text.splitlines()[mark.line] if mark and mark.line < len(text.splitlines()) else ""
    hint = next((h for words, h in _HINTS if words in problem), None)
    if "\t" in line[: len(line) - len(line.lstrip())]:
        hint = _HINTS[0][1]
    return f"{where}: {problem}" + (f" ({hint})" if hint else "") + (f"\n    {line.strip()}" if line.strip() else "")


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; ValueError 'FILE, line L, column C: <problem> (<hint>)' on a syntax error."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(syntax_message(path, e, text)) from None
