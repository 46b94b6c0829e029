"""The run report's page model and its two renderings: a `Section` (title, intro, blocks, headline numbers) as
self-contained HTML (no JS; inline CSS) and as Markdown. longvila/eval/report.py fills the sections.

    page = render_html("title", "lead", [Section("data", "Data", "What was read", [("p", "text")])])
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field


@dataclass
class Section:
    key: str
    title: str
    intro: str
    blocks: list[tuple] = field(default_factory=list)
    """("p", text) | ("note", text) | ("h3", text) | ("table", header, rows) | ("img", rel, caption) |
    ("pre", label, text) | ("link", text, href)."""
    headline: list[str] = field(default_factory=list)
    """The section's key numbers, one sentence each, for the "At a glance" list at the top."""

    def note(self, text: str) -> None:
        self.blocks.append(("note", text))


CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
       "table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #bbb;padding:.25em .6em;"
       "text-align:right}th{background:#eee}td:first-child{text-align:left}.note{color:#a33;font-style:italic}"
       "img{max-width:100%}pre{background:#f6f6f6;padding:.8em;overflow:auto}")


def render_html(title: str, lead: str, sections: list[Section]) -> str:
    e = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{CSS}</style>"
             f"</head><body><h1>{e(title)}</h1><p>{e(lead)}</p><ul>"]
    parts += [f"<li><a href='#{s.key}'>{e(s.title)}</a></li>" for s in sections] + ["</ul>"]
    for s in sections:
        parts.append(f"<h2 id='{s.key}'>{e(s.title)}</h2><p>{e(s.intro)}</p>")
        for b in s.blocks:
            if b[0] == "table":
                head = "".join(f"<th>{e(str(h))}</th>" for h in b[1])
                body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in b[2])
                parts.append(f"<table><tr>{head}</tr>{body}</table>")
            elif b[0] == "img":
                parts.append(f"<figure><img src='{e(b[1])}' alt='{e(b[2])}'><figcaption>{e(b[2])}"
                             "</figcaption></figure>")
            elif b[0] == "pre":
                parts.append(f"<details><summary>{e(b[1])}</summary><pre>{e(b[2])}</pre></details>")
            elif b[0] == "link":
                parts.append(f"<p>{e(b[1])} <a href='{e(b[2])}'>{e(b[2])}</a></p>")
            else:
                tag = {"h3": "h3", "p": "p", "note": "p class='note'"}[b[0]]
                parts.append(f"<{tag}>{e(b[1])}</{tag.split()[0]}>")
    return "\n".join(parts) + "\n</body></html>\n"


def render_markdown(title: str, lead: str, sections: list[Section]) -> str:
    lines = [f"# {title}", "", lead, ""]
    for s in sections:
        lines += [f"## {s.title}", "", s.intro, ""]
        for b in s.blocks:
            if b[0] == "table":
                lines += ["| " + " | ".join(map(str, b[1])) + " |", "|" + "---|" * len(b[1])]
                lines += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in b[2]]
            elif b[0] == "img":
                lines.append(f"![{b[2]}]({b[1]})")
            elif b[0] == "link":
                lines.append(f"{b[1]} [{b[2]}]({b[2]})")
            elif b[0] == "pre":
                lines += [f"<details><summary>{b[1]}</summary>", "", "```yaml", b[2].rstrip(), "```", "", "</details>"]
            else:
                lines.append({"h3": "### {}", "p": "{}", "note": "*{}*"}[b[0]].format(b[1]))
            lines.append("")
    return "\n".join(lines)
