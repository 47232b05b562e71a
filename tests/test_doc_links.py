"""Every link to a section of a markdown page (``page.md#anchor``) in the README, the changelog, the
benchmarks' README and docs/ names a heading that page has, as GitHub makes its anchors (lower case,
punctuation but hyphens and underscores dropped, spaces as hyphens)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "README.md",
         *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s#]*\.md)?#([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """The anchors of ``page``'s headings (outside fenced code)."""
    out, fenced = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def test_anchors_of_a_hand_made_page(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# Results\n\n## Stage 2's seed (measured 2026-12-06, the default since)\n```\n# not a heading\n```\n")
    assert anchors(page) == {"results", "stage-2s-seed-measured-2026-12-06-the-default-since"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_section_links_name_a_heading(page):
    broken = []
    for target, anchor in LINK.findall(page.read_text()):
        linked = (page.parent / target).resolve() if target else page
        if not linked.exists():
            broken.append(f"{target}#{anchor} (no such page)")
        elif anchor not in anchors(linked):
            broken.append(f"{target}#{anchor}")
    assert not broken, f"{page.relative_to(ROOT)} links to sections that do not exist: {broken}"
