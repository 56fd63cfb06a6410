"""MkDocs hooks (mkdocs.yml `hooks:`): the tutorials join the site from notebooks/, where they live.

`notebooks/README.md` (the tutorials' index) and every `notebooks/NN_*.ipynb` (rendered by mkdocs-jupyter,
which shows each figure's saved PNG) become pages under `notebooks/` on the site, and the nav's "Tutorials"
section lists them in order: a new notebook appears on the site with no edit here or in mkdocs.yml. A page
links to them as `notebooks/README.md` relative to docs/ (`../notebooks/README.md` from a guide).
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
SECTION = "Tutorials"


def _tutorials() -> list[str]:
    """Their paths from the repository root, which are also their paths on the site: README first."""
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    return ["notebooks/README.md", *(p.relative_to(ROOT).as_posix() for p in notebooks)]


def on_config(config):
    for entry in config["nav"] or []:
        if isinstance(entry, dict) and SECTION in entry:
            entry[SECTION] = _tutorials()
    return config


@event_priority(100)  # before mkdocs-jupyter's on_files, which turns .ipynb files into pages
def on_files(files: Files, config) -> Files:
    # A plain File read from the repository root (not File.generated: mkdocs-jupyter's wrapper loses the
    # source path of a generated file).
    for path in _tutorials():
        files.append(File(path, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files
