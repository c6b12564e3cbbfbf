"""README.md and docs/*.md: their Python runs, their links resolve, the CLI reference is complete.

Conventions (documented in docs/contributing.md):
* every block fenced as ```python is executed, each in a fresh Python process run from a
  temporary folder with this checkout on the path; a block that cannot run as written is
  preceded, on the line right before its fence, by ``<!-- not-run: REASON -->``;
* blocks fenced as bash, console, text (or with no language) are never run;
* every relative link and #anchor resolves, anchors by GitHub's rules;
* docs/cli.md has a ``## tf-bertopt COMMAND`` section for every registered command naming
  each of its options, and names no option the command lacks;
* docs/notebooks.md links every notebook in notebooks/;
* docs/api.md names every name in the `__all__` of tf_bertopt, its keras3, tf_keras and migrate.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import re
import subprocess
import sys

import pytest

from cli_helpers import REPO, environment

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(?P<reason>.*?)\s*-->$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<language>[\w+-]*)\s*$")
BLOCK_TIMEOUT_S = 120


@dataclasses.dataclass
class CodeBlock:
    page: str
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    not_run_reason: str | None

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


def code_blocks(page) -> list[CodeBlock]:
    blocks, lines = [], page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent = len(opening["indent"])
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        code = "\n".join(line[indent:] for line in lines[index + 1 : end])
        previous = next((line.strip() for line in reversed(lines[:index]) if line.strip()), "")
        marker = NOT_RUN.match(previous)
        blocks.append(
            CodeBlock(
                page=str(page.relative_to(REPO)),
                line=index + 1,
                language=opening["language"],
                code=code,
                not_run_reason=marker["reason"] if marker else None,
            )
        )
        index = end + 1
    return blocks


PYTHON_BLOCK_PLACEHOLDER = "<python block>"


def prose(page, keep_inline_code: bool = False) -> str:
    """The page without its fenced blocks (each python block leaves a placeholder line) and,
    unless asked, without inline code: links and headings there do not count."""
    kept, inside = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        opening = FENCE.match(line)
        if inside and line.strip() == "```":
            inside = False
        elif opening and not inside:
            inside = True
            if opening["language"] == "python":
                kept.append(PYTHON_BLOCK_PLACEHOLDER)
        elif not inside:
            kept.append(line if keep_inline_code else re.sub(r"`[^`]*`", "``", line))
    return "\n".join(kept)


ALL_BLOCKS = [block for page in PAGES for block in code_blocks(page)]
PYTHON_BLOCKS = [block for block in ALL_BLOCKS if block.language == "python"]


def test_docs_pages_are_found():
    names = {page.name for page in PAGES}
    assert {"README.md", "cli.md", "api.md", "exactness.md", "migrating-from-tf1.md"} <= names


def test_readme_stays_a_landing_page():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move the depth to a docs/ page"


RUNNABLE_BLOCKS = [block for block in PYTHON_BLOCKS if block.not_run_reason is None]
PARALLEL_BLOCKS = 3  # most of a block's time is TensorFlow's import, which overlaps well


def run_block(block: CodeBlock, folder) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", block.code],
        cwd=folder,
        env={**environment(), "MPLBACKEND": "Agg"},
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def block_results(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every runnable block, each in its own process and folder, a few at a time."""
    with concurrent.futures.ThreadPoolExecutor(PARALLEL_BLOCKS) as pool:
        futures = {
            block.name: pool.submit(run_block, block, tmp_path_factory.mktemp("block")) for block in RUNNABLE_BLOCKS
        }
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("block", RUNNABLE_BLOCKS, ids=lambda b: b.name)
def test_python_block_runs(block, block_results):
    result = block_results[block.name]
    assert result.returncode == 0, f"{block.name} failed:\n{result.stderr[-4000:]}"


def test_python_blocks_not_run_say_why():
    unexplained = [b.name for b in PYTHON_BLOCKS if b.not_run_reason is not None and len(b.not_run_reason) < 10]
    assert not unexplained, f"give the reason in <!-- not-run: REASON -->: {unexplained}"


def test_not_run_markers_sit_right_before_a_python_block():
    for page in PAGES:
        lines = prose(page, keep_inline_code=True).splitlines()
        for number, line in enumerate(lines):
            if NOT_RUN.match(line.strip()):
                following = next((later for later in lines[number + 1 :] if later.strip()), "")
                assert following.strip() == PYTHON_BLOCK_PLACEHOLDER, (
                    f"{page.name}: the marker {line.strip()!r} must come right before a ```python block"
                )


def test_code_fences_name_a_known_language():
    allowed = {"", "python", "bash", "console", "text", "markdown"}
    unknown = [f"{b.name} ({b.language})" for b in ALL_BLOCKS if b.language not in allowed]
    assert not unknown, f"fence languages must be one of {sorted(allowed)}: {unknown}"


def github_anchor(heading: str) -> str:
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page) -> set[str]:
    found, counts = set(), {}
    for line in prose(page, keep_inline_code=True).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = github_anchor(heading.group(1))
            found.add(slug if slug not in counts else f"{slug}-{counts[slug]}")
            counts[slug] = counts.get(slug, 0) + 1
    return found


def test_github_anchor_rules():
    assert github_anchor("See a schedule before you train: `tf-bertopt schedule`") == (
        "see-a-schedule-before-you-train-tf-bertopt-schedule"
    )
    assert github_anchor("EMA (`use_ema=True`)") == "ema-use_ematrue"
    assert github_anchor("Gradient accumulation (Keras 3)") == "gradient-accumulation-keras-3"


LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)\)")


def relative_links(page) -> list[str]:
    targets = [match["target"] for match in LINK.finditer(prose(page))]
    return [target for target in targets if not re.match(r"^[a-z]+:", target)]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_relative_links_and_anchors_resolve(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{target}: no file {destination}")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with anchor #{anchor} in {destination.name}")
    assert not broken, f"{page.name}: broken links:\n" + "\n".join(broken)


def test_docs_use_no_words_from_how_the_library_was_built():
    forbidden = re.compile(r"\bseeds?'|the project's|\bmet\?|lent to|were available while", re.IGNORECASE)
    hits = [
        f"{page.name}:{number}: {line.strip()}"
        for page in PAGES
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        if forbidden.search(line)
    ]
    assert not hits, "\n".join(hits)


def prose_text(markdown: str) -> str:
    """Markdown without its fenced blocks (shell examples may use other tools' options)."""
    return re.sub(r"^\s*```[\w+-]*\s*$.*?^\s*```\s*$", "", markdown, flags=re.MULTILINE | re.DOTALL)


def cli_commands() -> tuple[dict[str, argparse.ArgumentParser], argparse.ArgumentParser]:
    from tf_bertopt.cli import build_parser

    parser = build_parser()
    (subcommands,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return dict(subcommands.choices), parser


def documented_names(action: argparse.Action) -> list[str]:
    """What the reference must mention for this argument: every option string, or a positional's metavar."""
    if action.option_strings:
        return list(action.option_strings)
    return [action.metavar or action.dest.upper()]


def cli_sections() -> tuple[str, dict[str, str]]:
    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    parts = re.split(r"^## tf-bertopt (\S+)\s*$", text, flags=re.MULTILINE)
    return parts[0], dict(zip(parts[1::2], parts[2::2]))


def mentions(text: str, name: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) is not None


def test_cli_reference_has_a_section_per_command_and_no_other():
    commands, _ = cli_commands()
    _, sections = cli_sections()
    assert sorted(sections) == sorted(commands)


def test_cli_reference_names_every_option():
    commands, parser = cli_commands()
    intro, sections = cli_sections()
    common = [name for action in parser._actions if action.dest != "help" and action.option_strings
              for name in documented_names(action)]
    missing = [f"tf-bertopt {name}" for name in common if not mentions(intro, name)]
    for command, subparser in commands.items():
        text = sections.get(command, "")
        for action in subparser._actions:
            if action.dest == "help":
                continue
            missing += [f"tf-bertopt {command} {name}" for name in documented_names(action)
                        if not mentions(text, name) and not mentions(intro, name)]
    assert not missing, "docs/cli.md does not document: " + ", ".join(missing)


def test_cli_reference_names_no_option_a_command_lacks():
    commands, parser = cli_commands()
    _, sections = cli_sections()
    common = {name for action in parser._actions for name in action.option_strings}
    stale = []
    for command, text in sections.items():
        known = common | {name for action in commands[command]._actions for name in action.option_strings}
        stale += [f"tf-bertopt {command} {name}" for name in re.findall(r"(?<![\w-])--[a-z][\w-]*", prose_text(text))
                  if name not in known]
    assert not stale, "docs/cli.md names options that do not exist: " + ", ".join(sorted(set(stale)))


def test_notebooks_page_lists_every_notebook():
    listed = (REPO / "docs" / "notebooks.md").read_text(encoding="utf-8")
    notebooks = sorted(path.name for path in (REPO / "notebooks").glob("*.ipynb"))
    assert notebooks and all(f"(../notebooks/{name})" in listed for name in notebooks), notebooks


def test_api_reference_names_every_public_name():
    import importlib

    text = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    undocumented = []
    for namespace in ("tf_bertopt", "tf_bertopt.keras3", "tf_bertopt.tf_keras", "tf_bertopt.migrate"):
        module = importlib.import_module(namespace)
        undocumented += [
            f"{namespace}.{name}"
            for name in module.__all__
            if not re.search(rf"`(?:[\w.]+\.)?{re.escape(name)}(?![\w])", text)
        ]
    assert not undocumented, f"docs/api.md does not document: {undocumented}"
