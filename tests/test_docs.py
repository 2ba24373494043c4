"""README.md and docs/: every relative link resolves (files and #anchors), the README stays a short page,
and the tables that tools write into the docs (kws-ablation's) are where the tools look for them.

The anchors follow GitHub's rule for heading ids: lower case, punctuation dropped, spaces → hyphens,
``-1``, ``-2``, ... for repeated headings.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
README_MAX_LINES = 200

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans blanked (links in code are not links)."""
    lines, in_fence = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        lines.append("" if in_fence else re.sub(r"`[^`]*`", "``", line))
    return lines


def heading_slug(heading: str) -> str:
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading counts by its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    in_fence = False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        match = None if in_fence else HEADING.match(line)
        if match:
            slug = heading_slug(match.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def broken_links(page: Path, root: Path) -> list[str]:
    """Every relative link of ``page`` whose file (inside ``root``) or #anchor does not exist."""
    problems = []
    for number, line in enumerate(prose_lines(page.read_text()), start=1):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            where = f"{page.relative_to(root)}:{number}: {target}"
            resolved = (page.parent / path_part).resolve() if path_part else page
            if not resolved.is_relative_to(root.resolve()):
                problems.append(f"{where} (outside the repository)")
            elif not resolved.exists():
                problems.append(f"{where} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                problems.append(f"{where} (no heading with this anchor)")
    return problems


def test_every_relative_link_and_anchor_resolves():
    assert DOCS.is_dir() and len(pages()) > 1
    problems = [problem for page in pages() for problem in broken_links(page, REPO)]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_link_check_finds_missing_files_and_anchors(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Every setting: `KWS_*`\n\n## Every setting: `KWS_*`\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/a.md) [ok](docs/a.md#every-setting-kws_) [ok](docs/a.md#every-setting-kws_-1) [ok](#title)\n"
        "# Title\n"
        "[web](https://example.org/x) `[in code](nowhere.md)`\n"
        "```\n[in a fence](nowhere.md)\n```\n"
        "[gone](docs/b.md) ![gone image](img/x.png) [bad anchor](docs/a.md#no-such) [bad local](#nothing)\n"
        "[escape](../../etc/passwd)\n"
    )
    problems = broken_links(page, tmp_path)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "docs/b.md (no such file)", "img/x.png (no such file)", "docs/a.md#no-such (no heading with this anchor)",
        "#nothing (no heading with this anchor)", "../../etc/passwd (outside the repository)",
    ]


def test_readme_is_short_and_links_every_docs_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move detail to docs/"
    linked = {(REPO / target.partition("#")[0]).resolve() for line in prose_lines(README.read_text())
              for target in LINK.findall(line) if target.startswith("docs/")}
    unlinked = [p.relative_to(REPO) for p in DOCS.glob("*.md") if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


# -- kws-ablation writes its tables into docs/results.md ----------------------------------------------------


def ablation_markers(text: str) -> list[str]:
    return re.findall(r"^<!-- ablation:([\w.-]+) -->$", text, flags=re.MULTILINE)


ABLATION_PAGES = ("results.md", "ablation.md")


def test_ablation_tables_live_in_results_and_ablation_and_the_commands_write_there():
    from training.ablation import load_study

    assert ablation_markers((DOCS / "results.md").read_text()), "docs/results.md has no <!-- ablation:NAME --> markers"
    assert not ablation_markers(README.read_text()), "the ablation tables live in docs/, not in the README"
    for page in ABLATION_PAGES:
        text = (DOCS / page).read_text()
        for name in ablation_markers(text):
            assert text.count(f"<!-- /ablation:{name} -->") == 1, f"{page}: marker {name} is not closed once"
        commands = re.findall(r"kws-ablation .*?(?=\n```)", text, flags=re.S)
        assert commands, page
        for command in commands:  # each writes into this page: with --doc, or through a study that names it
            study = re.search(r"--study (\S+)", command)
            writes_here = (f"--doc docs/{page}" in command if study is None
                           else Path(f"docs/{page}") in load_study(REPO / study.group(1)).docs)
            assert writes_here, f"{page}: {command}"


@pytest.mark.parametrize("flag", ["--doc", "--readme"])
def test_kws_ablation_rewrites_only_its_table(tmp_path, flag):
    from training.ablation import main

    page = tmp_path / "results.md"
    original = (DOCS / "results.md").read_text()
    page.write_text(original)
    name = ablation_markers(original)[0]
    runs = tmp_path / "runs"
    for mode, accuracy in (("none", 0.5), ("learned", 0.75)):
        (runs / f"{mode}-seed0").mkdir(parents=True)
        summary = {"delay_mode": mode, "parameters": {"total": 1234}, "best_epoch": 3,
                   "validation": {"accuracy": accuracy}, "test": {"accuracy": accuracy - 0.125}}
        (runs / f"{mode}-seed0" / "summary.json").write_text(json.dumps(summary))
    assert main(["--config", str(REPO / "configs" / "fsdd.toml"), "--out", str(runs), "--name", name,
                 "--seeds", "0", "--collect-only", flag, str(page)]) == 0
    written = page.read_text()
    table = re.search(rf"<!-- ablation:{name} -->\n(.*?)<!-- /ablation:{name} -->", written, flags=re.S).group(1)
    assert table == (runs / "table.md").read_text()
    assert "| no delays | 1 | 1,234 | 50.00 ± 0.00 | 37.50 ± 0.00 | 3 |" in table
    assert "| learned delays (DCLS) | 1 | 1,234 | 75.00 ± 0.00 | 62.50 ± 0.00 | 3 |" in table
    # Everything outside this table's markers is unchanged.
    pattern = rf"(<!-- ablation:{name} -->\n).*?(<!-- /ablation:{name} -->)"
    assert re.sub(pattern, r"\1\2", written, flags=re.S) == re.sub(pattern, r"\1\2", original, flags=re.S)
