"""The repository's own documentation: nothing points outside the repository, and links resolve.

Users get this repository and nothing beside it, so no file in it may send them to a document
elsewhere (the team's notes outside the checkout). And every relative link in the README and in
``docs/`` must reach a file of the repository (and, for a ``#fragment`` into a Markdown file, one of its
headings), so the documentation does not rot as files move.
"""

from __future__ import annotations

import argparse
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


def test_no_documentation_links_outside_the_repository():
    external = [f"{source.relative_to(ROOT).as_posix()}: {link}" for source in documentation_files()
                for link in links(source.read_text(encoding="utf-8"))
                if _EXTERNAL.match(link) or link.startswith("//")]
    assert not external, "links outside the repository:\n" + "\n".join(external)


# --- docs/commands.md against the parser --------------------------------------------------------------

_COMMAND_HEADING = re.compile(r"^(#{2,3}) `deploykit ([a-z ]+)`\s*$")
_ANY_HEADING = re.compile(r"^#{1,6} ")
_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
_INVOCATION = re.compile(r"\bdeploykit(?:\.cli)? ((?:[a-z]+ ?)+)")


def command_parsers() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every command path of the CLI's parser, groups included: ``()`` is ``deploykit`` itself,
    ``("lut",)`` a group, ``("lut", "check")`` a command."""
    from deploykit.cli import build_parser

    found, todo = {}, [((), build_parser())]
    while todo:
        path, parser = todo.pop()
        found[path] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [((*path, name), sub) for name, sub in action.choices.items()]
    return found


def parser_options(parser: argparse.ArgumentParser) -> set[str]:
    return {name for action in parser._actions for name in action.option_strings if name.startswith("--")}


def longest_path(words: str, paths) -> tuple[str, ...] | None:
    """The longest command path ``words`` starts with (``lut check TABLE`` → ``("lut", "check")``)."""
    split = words.split()
    for end in range(len(split), 0, -1):
        if tuple(split[:end]) in paths:
            return tuple(split[:end])
    return None


def mentions(text: str, default: tuple[str, ...], paths) -> list[tuple[tuple[str, ...], str]]:
    """(command path, option) for every option ``text`` names. An option belongs to the command that a
    shell line or a code span invokes (``deploykit verify --table``, `` `verify --table` ``), else to
    ``default``; a shell line that runs another program (pip, torchrun …) and no deploykit command is
    left out."""
    found: list[tuple[tuple[str, ...], str]] = []

    def take(chunk: str, owner: tuple[str, ...] | None) -> None:
        invoked = _INVOCATION.search(chunk)
        path = longest_path(invoked.group(1), paths) if invoked else None
        if path is not None:
            owner, chunk = path, chunk[invoked.start(1) + len(" ".join(path)):]
        if owner is not None:
            found.extend((owner, option) for option in _OPTION.findall(chunk))

    in_code, logical = False, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif in_code:
            logical += line
            if not line.rstrip().endswith("\\"):
                take(logical, default if logical.lstrip().startswith(("#", "deploykit ")) else None)
                logical = ""
        else:
            take(_CODE_SPAN.sub(" ", line), default)
            for _, span in re.findall(r"(`+)(.*?)\1", line):
                take(span if span.startswith("deploykit") else f"deploykit {span}", default)
    return found


def command_sections(markdown: str, paths) -> dict[tuple[str, ...], str]:
    """Each ``## `deploykit PATH` `` (or ``###``) section's text up to the next heading, so that a
    group's section is its introduction; the text before the first section is ``()``'s."""
    sections: dict[tuple[str, ...], list[str]] = {(): []}
    current: tuple[str, ...] | None = ()
    in_code = False
    for line in markdown.splitlines():
        in_code ^= line.lstrip().startswith("```")
        heading = None if in_code else _COMMAND_HEADING.match(line)
        if heading:
            current = tuple(heading.group(2).split())
            assert current in paths, f"a section for `deploykit {heading.group(2)}`, which is no command"
            assert current not in sections, f"two sections for `deploykit {heading.group(2)}`"
            sections[current] = []
        elif not in_code and _ANY_HEADING.match(line):
            current = None
        elif current is not None:
            sections[current].append(line)
    return {path: "\n".join(lines) for path, lines in sections.items()}


def test_mentions_belong_to_the_command_they_invoke():
    paths = {(), ("verify",), ("lut",), ("lut", "check")}
    text = ("Use `--out DIR`; `verify --table` and `deploykit lut check --samples 3` agree, --seed too.\n"
            "```bash\ndeploykit lut check T \\\n    --fresh\npip install --upgrade x\n"
            "# a note on --rounds\n```\n")
    assert sorted(mentions(text, ("verify",), paths)) == sorted([
        (("verify",), "--out"), (("verify",), "--table"), (("lut", "check"), "--samples"),
        (("verify",), "--seed"), (("lut", "check"), "--fresh"), (("verify",), "--rounds")])


def test_the_command_reference_matches_the_parser():
    parsers = command_parsers()
    commands = {path for path, parser in parsers.items()
                if not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)}
    sections = command_sections((ROOT / "docs" / "commands.md").read_text(encoding="utf-8"), parsers)
    problems = [f"`deploykit {' '.join(path)}` has no section" for path in sorted(commands - set(sections))]

    def known(path: tuple[str, ...]) -> set[str]:  # a group's: its commands' options
        if path in commands or path == ():
            return parser_options(parsers[path])
        return set().union(*(parser_options(parsers[c]) for c in commands if c[:len(path)] == path))

    for path, text in sections.items():
        found = mentions(text, path, parsers)
        name = " ".join(("deploykit", *path))
        problems += [f"{name}: `{option}` is no option of `deploykit {' '.join(owner)}`"
                     for owner, option in sorted(set(found)) if option not in known(owner) | {"--help"}]
        if path in commands:
            unmentioned = parser_options(parsers[path]) - {"--help"} - {o for p, o in found if p == path}
            problems += [f"{name}: `{option}` is not mentioned" for option in sorted(unmentioned)]
    assert not problems, "docs/commands.md differs from the parser:\n" + "\n".join(problems)


def test_the_architecture_page_lists_the_layers_in_order():
    from deploykit._layers import LAYERS

    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    rule = text[text.index("## The import rule"):text.index("## Artifacts")]
    listed = [tuple(re.findall(r"`([^`]+)`", line.partition(" — ")[0]))
              for line in re.findall(r"^\d+\. (.+)$", rule, re.MULTILINE)]
    assert listed == [tuple(layer) for layer in LAYERS], (
        f"docs/architecture.md lists the layers as {listed}; deploykit/_layers.py has {list(LAYERS)}")
