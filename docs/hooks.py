"""MkDocs hooks: the measured pages show the stored benchmark results, never a copy of them.

- A line `--8<-- "benchmarks/results/NAME.md"` is replaced by that file, its headings placed under the heading the
  line sits in. A missing file fails the build.
- The files of `benchmarks/results/` that are not markdown (figures, JSON) are served at `benchmarks/results/NAME`,
  and a page's relative link to one of them (`../benchmarks/results/NAME.png`, as it resolves in the repository) is
  pointed there, so the same link works on the site and when the page is read in the repository.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SITE_RESULTS = "benchmarks/results"  # where the site serves them, relative to the site's root

INCLUDE = re.compile(r'^--8<-- "benchmarks/results/([^"/]+\.md)"[ \t]*$', re.M)
HEADING = re.compile(r"^(#{1,6})(?= )", re.M)
LINK = re.compile(r"(\]\()([^)\s]+)(\))")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    for path in sorted(RESULTS.iterdir()):
        if path.is_file() and path.suffix != ".md":
            files.append(
                File(f"{SITE_RESULTS}/{path.name}", str(ROOT), config["site_dir"], config["use_directory_urls"])
            )
    return files


def on_page_markdown(markdown: str, page: Page, config: Any, files: Files, **kwargs: Any) -> str:
    markdown = INCLUDE.sub(lambda match: _include(match, markdown, page), markdown)
    return LINK.sub(lambda match: _relink(match, page), markdown)


def _include(match: re.Match[str], markdown: str, page: Page) -> str:
    path = RESULTS / match.group(1)
    if not path.is_file():
        raise PluginError(f"{page.file.src_uri} includes {SITE_RESULTS}/{match.group(1)}, which does not exist")
    above = HEADING.findall(FENCE.sub("", markdown[: match.start()]))  # a code block's `# comment` is no heading
    depth = len(above[-1]) if above else 0
    return HEADING.sub(lambda heading: "#" * min(6, len(heading.group(1)) + depth), path.read_text().strip())


def _relink(match: re.Match[str], page: Page) -> str:
    target = match.group(2)
    if "://" in target or target.startswith(("#", "/", "mailto:")) or page.file.abs_src_path is None:
        return match.group(0)
    resolved = (Path(page.file.abs_src_path).parent / target).resolve()
    if resolved.parent != RESULTS or resolved.suffix == ".md":
        return match.group(0)
    link = posixpath.relpath(f"{SITE_RESULTS}/{resolved.name}", posixpath.dirname(page.file.src_uri) or ".")
    return f"{match.group(1)}{link}{match.group(3)}"
