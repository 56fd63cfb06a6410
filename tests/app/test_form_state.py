"""Every input widget of the app keeps its value across pages: each keyed widget in app.py and pages/ is made
with Streamlit's `persist_state` (directly, or through `_state.kept`). Streamlit drops the value of a
widget a run did not draw, so one widget without it resets whenever its user leaves the page."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INPUTS = {
    "checkbox", "color_picker", "date_input", "multiselect", "number_input", "pills", "radio",
    "segmented_control", "select_slider", "selectbox", "slider", "text_area", "text_input", "time_input",
    "toggle",
}  # fmt: skip


def _keeps(call: ast.Call) -> bool:
    for kw in call.keywords:
        if kw.arg == "persist_state":
            return True
        if kw.arg is None and isinstance(kw.value, ast.Call):  # **kept(...) / **_state.kept(...)
            func = kw.value.func
            if getattr(func, "attr", getattr(func, "id", None)) == "kept":
                return True
    return False


def _keyed_inputs(path: Path) -> list[tuple[int, str, bool]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in INPUTS:
            keyed = any(kw.arg == "key" or kw.arg is None for kw in node.keywords)
            if keyed:
                found.append((node.lineno, node.func.attr, _keeps(node)))
    return found


def test_every_keyed_input_widget_keeps_its_value_across_pages():
    files = [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]
    seen = {f.name: _keyed_inputs(f) for f in files}
    missing = [f"{name}:{line} {kind}" for name, rows in seen.items() for line, kind, ok in rows if not ok]
    assert not missing, f"without persist_state (use **_state.kept(key, first)): {', '.join(missing)}"
    # The check sees the widgets it guards (a renamed helper must not make it pass vacuously).
    assert sum(len(rows) for rows in seen.values()) > 40
    assert all(seen[f"{page}.py"] for page in ("compress", "sensitivity", "rankings", "weights", "overview"))
