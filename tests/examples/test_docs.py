"""The docs speak to users: their code blocks are regions of the example scripts, so they cannot
drift from code that runs (tests/examples/test_examples.py runs every script), and they cite no
file outside the repository.

A fenced block right after `<!-- from examples/<file> [docs:<name>] -->` in the README, docs/ or
a README beside the code must equal the lines between `# [docs:<name>]` and `# [/docs:<name>]`
in that file, dedented, without `# fmt: skip` markers; every region is shown somewhere.
`python tests/examples/test_docs.py --write` rewrites the blocks from the examples.
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "src").rglob("README.md")), ROOT / "recipes" / "README.md",
        *sorted((ROOT / "examples").rglob("README.md")), ROOT / "benchmarks" / "README.md",
        ROOT / "benchmarks" / "RESULTS.md"]  # fmt: skip
#: What a user's clone does not have: the development workspace's shared folder and notes.
OUTSIDE = ("../shared", "SPEC.md", "BENCHMARKS.md")
BLOCK = re.compile(
    r"<!-- from (?P<file>\S+) \[docs:(?P<name>[\w-]+)\] -->\n```python\n(?P<code>.*?)```", re.S
)
REGION = re.compile(
    r"^[ \t]*# \[docs:(?P<name>[\w-]+)\]\n(?P<code>.*?)^[ \t]*# \[/docs:(?P=name)\]\n", re.S | re.M
)


def regions(path: Path) -> dict[str, str]:
    """Each docs region of an example file, as the docs show it."""
    out = {}
    for m in REGION.finditer(path.read_text(encoding="utf-8")):
        code = textwrap.dedent(m["code"]).replace("  # fmt: skip", "")
        out[m["name"]] = code
    return out


def blocks(doc: Path) -> list[re.Match[str]]:
    """The example blocks of one docs file."""
    return list(BLOCK.finditer(doc.read_text(encoding="utf-8")))


def test_every_docs_block_equals_its_example_region() -> None:
    stale = []
    for doc in DOCS:
        for m in blocks(doc):
            code = regions(ROOT / m["file"]).get(m["name"])
            assert code is not None, f"{doc}: no region [docs:{m['name']}] in {m['file']}"
            if m["code"] != code:
                stale.append(f"{doc.relative_to(ROOT)}: [docs:{m['name']}] of {m['file']}")
    assert not stale, "run `python tests/examples/test_docs.py --write`: " + ", ".join(stale)


def test_every_example_region_is_shown_in_the_docs() -> None:
    shown = {(m["file"], m["name"]) for doc in DOCS for m in blocks(doc)}
    for path in sorted((ROOT / "examples").glob("*.py")):
        for name in regions(path):
            assert (f"examples/{path.name}", name) in shown, f"{path.name} [docs:{name}]"


def test_docs_cite_no_file_outside_the_repository() -> None:
    cited = [
        f"{doc.relative_to(ROOT)}:{n}: {word}"
        for doc in DOCS
        for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1)
        for word in OUTSIDE
        if word in line
    ]
    assert not cited


def write() -> None:
    """Rewrite every example block of the docs from its region."""
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        new = BLOCK.sub(
            lambda m: (
                m.string[m.start() : m.start("code")] + regions(ROOT / m["file"])[m["name"]] + "```"
            ),
            text,
        )
        if new != text:
            tmp = doc.with_name(doc.name + ".tmp")
            tmp.write_text(new, encoding="utf-8")
            tmp.replace(doc)
            print(f"rewrote {doc.relative_to(ROOT)}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    write()
