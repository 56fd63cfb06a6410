"""The documentation: the site builds offline with no broken link, its generated pages are current, and what
its pages say about the code (the architecture, the app's pages, the README's two commands) is true.

The site is built the way `make docs` builds it (`python -m mkdocs build --strict`), with every proxy
variable pointing at a closed local port, so a build step that reached for the network would fail here.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
TWO_COMMANDS = ["pip install -r requirements.txt && streamlit run app.py", "make test"]
MAX_README_LINES = 120
PLOTLY_MIME = "application/vnd.plotly.v1+json"
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens, a connection is refused at once


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = os.environ | {"NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    env |= {k: CLOSED for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY")}
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = _run("-m", "mkdocs", "build", "--strict", "--site-dir", str(out))
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def test_site_builds_strict_and_offline(site):
    pages = list(site.rglob("*.html"))
    assert (site / "index.html").exists() and len(pages) >= 15
    for page in pages:
        html = page.read_text(encoding="utf-8")
        assert "fonts.googleapis.com" not in html, f"{page.name} loads web fonts"
        assert "window.PlotlyConfig" not in html, f"{page.name} carries plotly.js"


def test_makefile_docs_is_the_strict_build():
    target = re.search(r"^docs:\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert target and "mkdocs build --strict" in target.group(1)
    assert "tools/make_reference.py" in target.group(1)


def _figures(notebook: Path) -> int:
    nb = json.loads(notebook.read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    return sum(PLOTLY_MIME in o.get("data", {}) for o in outputs)


def test_every_tutorial_is_a_page_showing_its_figures(site):
    """Each notebook is rendered, and shows as many PNG images as it has plotly figures."""
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks
    for notebook in notebooks:
        page = site / "notebooks" / f"{notebook.stem}.html"
        assert page.exists(), f"{notebook.name} has no page"
        images = page.read_text(encoding="utf-8").count("data:image/png;base64,")
        assert images >= _figures(notebook) > 0, notebook.name
    index = (site / "notebooks" / "index.html").read_text(encoding="utf-8")
    for notebook in notebooks:
        assert f'href="{notebook.stem}.html"' in index, f"the tutorials' index does not link {notebook.name}"


def test_reference_pages_are_generated_from_the_current_code():
    done = _run("tools/make_reference.py", "--check")
    assert done.returncode == 0, f"run `python tools/make_reference.py` and commit:\n{done.stderr}"


# Prints the --help of `python -m analysis` and of each command it lists, as a user would see them, in one
# process (each `python -m analysis X --help` would import torch again).
HELPS = """
import contextlib, io, re, sys
from analysis.cli.main import main

def show(*argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([*argv, "--help"])
    return out.getvalue()

def commands(text):
    return re.findall(r"^    (\\S+)", text.split("commands:", 1)[1], re.M) if "commands:" in text else []

for command in commands(show()):
    print(command)
    for sub in commands(show(command)):
        print(command, sub)
"""


def test_cli_reference_shows_every_command():
    """Against the commands that `python -m analysis --help` and each command's --help list."""
    page = (DOCS / "reference" / "cli.md").read_text()
    done = _run("-c", HELPS)
    assert done.returncode == 0, done.stderr
    commands = done.stdout.splitlines()
    assert {"summary", "compress", "plan", "plan suggest", "runs list"} <= set(commands)
    for command in commands:
        assert f"## `python -m analysis {command}`" in page, command


def test_plan_fields_page_lists_every_key_a_plan_accepts():
    """Against the plan module's own key lists, which its parser checks plans against."""
    from analysis.compression import plan
    from analysis.transforms.registry import layer_keys

    page = (DOCS / "reference" / "plan-fields.md").read_text()
    for key in (*plan.PLAN_KEYS, *layer_keys()):
        assert f"| `{key}` |" in page, key


def test_architecture_names_real_modules_and_every_package():
    text = (DOCS / "architecture.md").read_text()
    for path in re.findall(r"`(analysis/[\w/]+(?:\.py)?)`", text):
        assert (ROOT / path).exists(), f"docs/architecture.md names {path}, which does not exist"
    for bullet in re.findall(r"^- \*\*`(analysis/\w+/)`\*\*:(.*?)(?=^- |^\S|\Z)", text, re.M | re.S):
        package, body = bullet
        for module in re.findall(r"`(\w+\.py)`", body):
            assert (ROOT / package / module).exists(), (
                f"docs/architecture.md: {package}{module} does not exist"
            )
    packages = {
        p.parent.relative_to(ROOT).as_posix() + "/" for p in (ROOT / "analysis").glob("*/__init__.py")
    }
    described = set(re.findall(r"^- \*\*`(analysis/\w+/)`\*\*", text, re.M))
    assert packages <= described, (
        f"packages missing from docs/architecture.md: {sorted(packages - described)}"
    )
    flat = {p.relative_to(ROOT).as_posix() for p in (ROOT / "analysis").glob("*.py")} - {
        "analysis/__init__.py",
        "analysis/__main__.py",
    }
    named = set(re.findall(r"`(analysis/\w+\.py)`", text))
    assert flat <= named, f"modules missing from docs/architecture.md: {sorted(flat - named)}"


def _app_pages() -> list[tuple[str, str]]:
    """(title, url_path) of every st.Page listed in app.py."""
    tree = ast.parse((ROOT / "app.py").read_text())
    pages = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "st.Page":
            kw = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg in ("title", "url_path")}
            pages.append((kw["title"], kw.get("url_path", "")))
    return pages


def test_app_guide_shows_every_page_with_its_screenshot():
    from PIL import Image

    guide = (DOCS / "guides" / "app.md").read_text()
    pages = _app_pages()
    assert len(pages) >= 8
    for title, url_path in pages:
        section = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", guide, re.M | re.S)
        assert section, f"docs/guides/app.md has no section for the {title} page"
        assert f"`/{url_path}`" in section.group(1), f"the {title} section does not give its path /{url_path}"
        shot = f"{url_path or 'home'}.png"
        assert f"](../img/{shot})" in section.group(1), f"the {title} section shows no img/{shot}"
        image = Image.open(DOCS / "img" / shot)
        assert image.format == "PNG" and image.width >= 600 and image.height >= 300


def _code_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"^```\w*\n(.*?)^```", text, re.M | re.S)]


def test_newcomer_readme_is_short_and_starts_with_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) < MAX_README_LINES
    assert _code_blocks(text)[:2] == TWO_COMMANDS
    assert re.search(r"!\[[^\]]*\]\(docs/img/\w+\.png\)", text), "no screenshot"


def test_newcomer_readme_links_resolve_from_the_repository_root():
    text = README.read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert len(links) >= 10
    for link in links:
        assert not link.startswith(("http:", "https:")), f"{link}: the README links into the repository"
        assert (ROOT / link).exists(), f"{link} does not exist"


def test_screenshot_hook_saves_a_cropped_reduced_png(tmp_path, monkeypatch):
    """The browser tests' opt-in hook, on a stand-in page: a 1400 px screenshot with a sidebar and empty space
    below its content comes back 1000 px wide, cut below the content (plus a margin), in at most 256 colours."""
    from PIL import Image

    sys.path.insert(0, str(ROOT / "tests" / "app"))
    try:
        from browsertools import DOCS_SHOT_WIDTH, DOCS_SHOTS_ENV, docs_shot
    finally:
        sys.path.pop(0)

    class Page:
        def screenshot(self, full_page: bool) -> bytes:
            image = Image.new("RGB", (1400, 2000), "white")
            image.paste((240, 240, 245), (0, 0, 300, 2000))  # a sidebar, down to the bottom
            image.paste((200, 30, 30), (400, 100, 1300, 700))  # the content ends at y = 700
            out = io.BytesIO()
            image.save(out, format="PNG")
            return out.getvalue()

    assert docs_shot(Page(), "unused") is None  # off unless asked for
    monkeypatch.setenv(DOCS_SHOTS_ENV, str(tmp_path))
    path = docs_shot(Page(), "page")
    image = Image.open(path)
    assert image.mode == "P" and image.width == DOCS_SHOT_WIDTH
    assert image.height == round((700 + 24) * DOCS_SHOT_WIDTH / 1400)
    assert image.convert("RGB").getpixel((600, 200)) == (200, 30, 30)
