"""The repository's own documentation: nothing points outside the repository, and links resolve.

Users get this repository and nothing beside it, so no file in it may send them to a document
elsewhere (the team's notes outside the checkout). And every relative link in the README and in
``docs/`` must reach a file of the repository (and, for a ``#fragment`` into a Markdown file, one of its
headings), so the documentation does not rot as files move.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve().relative_to(ROOT).as_posix()
# Spelled in pieces so that this file does not match itself.
FORBIDDEN = ("../" + "shared", "DESIGN" + ".md")

_FENCE = re.compile(r"^(`{3,}|~{3,}).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)[^`]*?\1")
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_HTML_LINK = re.compile(r"""<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def repository_files() -> list[str]:
    """Every file git tracks, plus new files it does not ignore (paths relative to the root)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout
    return sorted({name for name in listed.decode("utf-8", "replace").split("\0")
                   if name and (ROOT / name).is_file()})


def documentation_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose(markdown: str) -> str:
    """The Markdown without fenced code blocks and code spans, where link syntax means nothing."""
    return _CODE_SPAN.sub("", _FENCE.sub("", markdown))


def links(markdown: str) -> list[str]:
    text = prose(markdown)
    found = _INLINE_LINK.findall(text) + _REFERENCE_LINK.findall(text) + _HTML_LINK.findall(text)
    return [link for link in found if link]


def anchor(heading: str) -> str:
    """The fragment GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text only
    text = text.replace("`", "").strip().lower()
    kept = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading fragment of a Markdown file, with GitHub's -1, -2 suffixes for repeats."""
    seen: dict[str, int] = {}
    result = set()
    for heading in _HEADING.findall(_FENCE.sub("", markdown)):
        slug = anchor(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def broken(source: Path, link: str) -> str | None:
    """Why ``link`` in ``source`` does not resolve, or None when it does (external links are not checked)."""
    if _EXTERNAL.match(link) or link.startswith("//"):
        return None
    path_part, _, fragment = link.partition("#")
    target = (source.parent / path_part).resolve() if path_part else source.resolve()
    try:
        target.relative_to(ROOT)
    except ValueError:
        return "points outside the repository"
    if not target.exists():
        return "no such file"
    if (fragment and target.suffix == ".md" and target.is_file()
            and fragment.lower() not in anchors(target.read_text(encoding="utf-8"))):
        return f"{target.relative_to(ROOT).as_posix()} has no heading #{fragment}"
    return None


# --- the helpers themselves ------------------------------------------------------------------------

def test_link_extraction_ignores_code_and_finds_every_link_form():
    text = ("See [a](docs/a.md) and ![plot](bench/p.png \"title\").\n"
            "`[not](a-link.md)` and\n```\n[not](either.md)\n```\n"
            "[ref]: docs/ref.md\n<img src=\"docs/i.png\"> [web](https://example.org)\n")
    assert sorted(links(text)) == sorted(["docs/a.md", "bench/p.png", "docs/ref.md", "docs/i.png",
                                          "https://example.org"])


def test_anchors_follow_githubs_rule():
    text = ("# Top\n## Search (`deploykit search`)\n### Padding and the ring\n## Top\n"
            "```\n# not a heading\n```\n")
    assert anchors(text) == {"top", "search-deploykit-search", "padding-and-the-ring", "top-1"}


def test_broken_links_are_caught(tmp_path):
    source = ROOT / "docs" / "README.md"
    assert broken(source, "method.md") is None
    assert broken(source, "../README.md") is None
    assert broken(source, "https://example.org/x") is None
    assert broken(source, "no-such-page.md") == "no such file"
    assert broken(source, "../../elsewhere.md") == "points outside the repository"
    assert "has no heading" in broken(source, "method.md#no-such-heading")


# --- the repository ---------------------------------------------------------------------------------

def test_no_file_points_outside_the_repository():
    hits = []
    for name in repository_files():
        if name == THIS:
            continue
        data = (ROOT / name).read_bytes()
        if any(word.encode() in data for word in FORBIDDEN):
            for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
                if any(word in line for word in FORBIDDEN):
                    hits.append(f"{name}:{number}: {line.strip()[:120]}")
    assert not hits, ("these lines refer to documents outside the repository; point to docs/ instead:\n"
                      + "\n".join(hits))


def test_every_relative_link_in_the_documentation_resolves():
    problems = []
    for source in documentation_files():
        for link in links(source.read_text(encoding="utf-8")):
            why = broken(source, link)
            if why:
                problems.append(f"{source.relative_to(ROOT).as_posix()}: ({link}) {why}")
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_readme_leads_to_the_documentation():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    readme_links = {link.partition("#")[0] for link in links(readme)}
    pages = {f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md")}
    assert "docs/README.md" in readme_links
    assert pages <= readme_links | {"docs/README.md"}, f"not linked from the README: {pages - readme_links}"
    index = links((ROOT / "docs" / "README.md").read_text(encoding="utf-8"))
    missing = {page.name for page in (ROOT / "docs").glob("*.md") if page.name != "README.md"} - set(index)
    assert not missing, f"not listed in docs/README.md: {sorted(missing)}"
