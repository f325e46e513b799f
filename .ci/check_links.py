#!/usr/bin/env python3
"""Fails on a broken internal link in the manual (docs/, an mdBook) or in README.md.

mdBook does not check links itself. For every `.md` page of the book, each relative link
`[text](path.md#anchor)` must name a file that exists inside the book (a page outside `docs/`
would be a dead link in the built HTML) and, with an anchor, a heading of that page. README.md's
links must name existing files, and its links into docs/ existing headings too. Headings become
anchors by mdBook's rule (GitHub's is the same for the headings used here): the text without
markup, lowercased, whitespace turned into `-`, every character but letters, digits, `-` and `_`
dropped, and `-1`, `-2`... added to a repeated one.

Usage: check_links.py [REPO_ROOT]. Prints each broken link as FILE:LINE: TARGET: REASON and
exits 1 if there is any.
"""

import re
import sys
from pathlib import Path

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.*?)\1")


def lines_outside_code(text):
    """(line number, line) for each line outside fenced code blocks."""
    fenced = None
    for number, line in enumerate(text.split("\n"), 1):
        fence = FENCE.match(line)
        if fence:
            if fenced is None:
                fenced = fence.group(1)
            elif fence.group(1) == fenced:
                fenced = None
            continue
        if fenced is None:
            yield number, line


def anchor_of(heading):
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = text.replace("`", "")
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    out = []
    for ch in text:
        if ch.isalnum() or ch in "-_":
            out.append(ch.lower())
        elif ch.isspace():
            out.append("-")
    return "".join(out)


_anchors = {}


def anchors(path):
    if path not in _anchors:
        seen = {}
        found = set()
        for _, line in lines_outside_code(path.read_text(encoding="utf-8")):
            match = HEADING.match(line)
            if not match:
                continue
            base = anchor_of(match.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
        _anchors[path] = found
    return _anchors[path]


def links(path):
    for number, line in lines_outside_code(path.read_text(encoding="utf-8")):
        line = INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line)
        for match in LINK.finditer(line):
            yield number, match.group(1)


def check(path, root, book):
    """Broken links of one file; `book` is docs/ for the manual's pages, None for README.md."""
    problems = []
    for number, target in links(path):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
            continue  # http:, https:, mailto:: not checked here
        where = f"{path.relative_to(root)}:{number}: {target}"
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path.resolve()
        if not dest.exists():
            problems.append(f"{where}: no such file")
            continue
        if book is not None and book not in dest.parents and dest != book:
            problems.append(f"{where}: leaves the book (docs/); the built HTML would not have it")
            continue
        if anchor and dest.suffix == ".md":
            checked = book is not None or docs(root) in dest.parents or dest == path.resolve()
            if checked and anchor not in anchors(dest):
                problems.append(f"{where}: no heading with anchor #{anchor} in {dest.name}")
    return problems


def docs(root):
    return (root / "docs").resolve()


def main():
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    root = root.resolve()
    book = docs(root)
    build = book / "book"
    pages = sorted(p for p in book.rglob("*.md") if build not in p.parents)
    problems = []
    for page in pages:
        problems += check(page, root, book)
    problems += check(root / "README.md", root, None)
    # Every page is in the book: a page left out of SUMMARY.md is never built.
    summary = book / "SUMMARY.md"
    listed = {(book / t).resolve() for _, t in links(summary) if not t.startswith("#")}
    for page in pages:
        if page != summary and page.resolve() not in listed:
            problems.append(f"{page.relative_to(root)}: not listed in docs/SUMMARY.md")
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} broken link(s)", file=sys.stderr)
        return 1
    print(f"links: {len(pages)} book pages and README.md checked, none broken")
    return 0


if __name__ == "__main__":
    sys.exit(main())
