"""The hub's web pages: one per repo (rendered model card, files with sizes, commits, tags) and an index of repos.

They live where the Hub keeps them, `/<org>/<repo>` (and `/<org>/<repo>/tree/<rev>`, `/<org>/<repo>/commit/<sha>`),
so the `repo_url` a publish records opens in a browser. Static HTML, no script. The card is CommonMark with raw HTML
disabled (markdown-it-py), so a card cannot inject markup; the route sends a Content-Security-Policy that allows no
script and no outside resource anyway.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from typing import Any
from urllib.parse import quote

from neuronforge.hub.objects import Entry

MAX_FILES_SHOWN = 2000
MAX_COMMITS_SHOWN = 50
MAX_CARD_BYTES = 1 << 20  # a larger README is shown cut, with a note
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; form-action 'none'"

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{background:#fff;border-bottom:1px solid #d0d7de;padding:16px 32px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#59636e}
main{display:grid;grid-template-columns:minmax(0,1fr) 380px;gap:24px;padding:24px 32px}
section{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:16px;margin-bottom:24px}
h2{font-size:16px;margin:0 0 12px} code,pre{font-family:ui-monospace,monospace;font-size:13px}
pre{background:#f6f8fa;padding:12px;overflow:auto;border-radius:6px}
table{border-collapse:collapse;width:100%} td,th{padding:4px 8px;border-bottom:1px solid #eaeef2;text-align:left}
td.size{text-align:right;white-space:nowrap} .badge{font-size:11px;border:1px solid #8c959f;border-radius:8px;padding:0 5px}
ul,ol{padding-left:20px;margin:0} li{margin:4px 0} a{color:#0969da;text-decoration:none}
.muted{color:#59636e} #card table td,#card table th{border:1px solid #d0d7de}
"""


def format_size(size: int) -> str:
    """A file size as the Hub shows it (decimal units): 512 B, 1.5 kB, 90.9 MB."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def split_card(readme: bytes) -> tuple[str | None, str]:
    """(YAML metadata block or None, markdown body) of a model card."""
    text = readme[:MAX_CARD_BYTES].decode("utf-8", "replace").replace("\r\n", "\n")
    if len(readme) > MAX_CARD_BYTES:
        text += f"\n\n*(card cut at {MAX_CARD_BYTES} bytes)*\n"
    if text.startswith("---\n"):
        end = text.find("\n---", 3)
        if end >= 0:
            after = text.find("\n", end + 4)
            return text[4:end], text[after + 1 :] if after >= 0 else ""
    return None, text


def render_markdown(text: str) -> str:
    from markdown_it import MarkdownIt  # imported when a page is served: the API never needs it

    return MarkdownIt("commonmark", {"html": False}).enable("table").enable("strikethrough").render(text)


def _href(*parts: str) -> str:
    return "/" + "/".join(quote(p, safe="/") for p in parts)


def _page(title: str, header: str, body: str) -> bytes:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style></head>'
        f"<body><header>{header}</header>{body}</body></html>\n"
    ).encode()


def render_repo_page(
    *,
    repo_id: str,
    revision: str,
    sha: str,
    tree: dict[str, Entry],
    history: list[dict[str, Any]],
    refs: dict[str, dict[str, str]],
    readme: bytes | None,
    endpoint: str,
    private: bool,
) -> bytes:
    """The HTML page of one repo at one revision. `history` holds up to MAX_COMMITS_SHOWN + 1 commits, newest first."""
    r = escape(repo_id)
    header = (
        f'<h1 id="repo-id">{r}</h1><p>{"private · " if private else ""}revision '
        f'<code id="revision">{escape(revision)}</code> at commit <code id="commit-sha">{escape(sha)}</code> · '
        f"{len(tree)} files · {format_size(sum(e.size for e in tree.values()))}</p>"
    )
    card_html = '<p class="muted">This repo has no README.md (model card).</p>'
    metadata_html = ""
    if readme is not None:
        metadata, markdown = split_card(readme)
        card_html = render_markdown(markdown)
        if metadata:
            metadata_html = f"<details><summary>Card metadata (YAML)</summary><pre>{escape(metadata)}</pre></details>"
    download = (
        f'from huggingface_hub import snapshot_download\npath = snapshot_download("{repo_id}", '
        f'revision="{revision}", endpoint="{endpoint}")'
    )
    main = (
        f'<main><div><section id="card"><h2>Model card</h2>{metadata_html}{card_html}</section>'
        f'<section id="files-section"><h2>Files</h2>{_files(repo_id, sha, tree)}</section></div>'
        f'<div><section id="use"><h2>Download</h2><pre>{escape(download)}</pre></section>'
        f'<section id="tags-section"><h2>Tags</h2>{_refs(repo_id, refs, "tags")}</section>'
        f'<section id="branches-section"><h2>Branches</h2>{_refs(repo_id, refs, "branches")}</section>'
        f'<section id="commits-section"><h2>Commits</h2>{_commits(repo_id, history)}</section></div></main>'
    )
    return _page(f"{repo_id} · neuronforge hub", header, main)


def _files(repo_id: str, sha: str, tree: dict[str, Entry]) -> str:
    rows = []
    for path, entry in sorted(tree.items())[:MAX_FILES_SHOWN]:
        lfs = ' <span class="badge">LFS</span>' if entry.lfs else ""
        rows.append(
            f'<tr data-path="{escape(path)}"><td><a href="{_href(repo_id, "resolve", sha, path)}">{escape(path)}</a>'
            f'{lfs}</td><td class="size" data-bytes="{entry.size}" title="{entry.size} bytes">'
            f"{format_size(entry.size)}</td></tr>"
        )
    more = len(tree) - MAX_FILES_SHOWN
    note = f'<p class="muted">… and {more} more files (list them with HfApi.list_repo_tree).</p>' if more > 0 else ""
    return f'<table id="files"><thead><tr><th>File</th><th>Size</th></tr></thead><tbody>{"".join(rows)}</tbody></table>{note}'


def _refs(repo_id: str, refs: dict[str, dict[str, str]], kind: str) -> str:
    items = [
        f'<li data-{kind[:-1] if kind == "tags" else "branch"}="{escape(name)}"><a href="{_href(repo_id, "tree", name)}">'
        f"{escape(name)}</a> → <code>{escape(target[:12])}</code></li>"
        for name, target in sorted(refs.get(kind, {}).items())
    ]
    return f'<ul id="{kind}">{"".join(items)}</ul>' if items else f'<p class="muted" id="{kind}">none</p>'


def _commits(repo_id: str, history: list[dict[str, Any]]) -> str:
    items = [
        f'<li data-sha="{escape(c["id"])}"><a href="{_href(repo_id, "commit", c["id"])}"><code>{escape(c["id"][:12])}'
        f'</code></a> <span class="title">{escape(c["title"])}</span> <time class="muted">{escape(c["date"])}</time></li>'
        for c in history[:MAX_COMMITS_SHOWN]
    ]
    more = '<p class="muted">… older commits: HfApi.list_repo_commits.</p>' if len(history) > MAX_COMMITS_SHOWN else ""
    return f'<ol id="commits">{"".join(items)}</ol>{more}'


def render_index(repos: Iterable[tuple[str, dict[str, Any]]], endpoint: str) -> bytes:
    """The hub's front page: every repo the caller may see, linked to its page."""
    items = [
        f'<li data-repo="{escape(repo_id)}"><a href="{_href(repo_id)}">{escape(repo_id)}</a>'
        f"{' <span class=badge>private</span>' if meta.get('private') else ''}</li>"
        for repo_id, meta in repos
    ]
    listing = f'<ul id="repos">{"".join(items)}</ul>' if items else '<p class="muted" id="repos">No repos yet.</p>'
    header = f"<h1>neuronforge hub</h1><p>{escape(endpoint)} · a Hugging Face Hub-compatible server on this machine</p>"
    return _page(
        "neuronforge hub", header, f'<main style="display:block"><section><h2>Repos</h2>{listing}</section></main>'
    )
