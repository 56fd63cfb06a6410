"""Whether a `.pt2` archive can be loaded without running code, read from the archive itself.

`torch.export.load` (torch 2.13, `torch/export/pt2_archive/_package.py` and `torch/_export/serde/
serialize.py`) runs code from the file in five places: a weight or constant marked `use_pickle` is read
with `torch.load(weights_only=False)`; constants named `custom_obj_*` / `opaque_obj_*` are unpickled; the
sample inputs are read with `weights_only=True` and, when that fails, again with `weights_only=False`
("Fallback to weights_only=False succeeded"); every symbolic-shape expression (`expr_str`) goes through
`sympy.sympify`, which is `eval`; and `ExportedProgram.module()` `exec`s the archive's `guards_code`.
Older archives (a root `version` member, `serialized_*.pt`) and AOTInductor packages (a compiled shared
library) load code too.

`check_pt2(path)` reads the zip directory and the JSON members (nothing unpickled) and refuses each of
those, so `torch.export.load` then takes only its data paths: plain tensor payloads, sample inputs that
the restricted `weights_only` unpickler reads, expressions made only of numbers, shape symbols and sympy's
arithmetic, graph nodes that call registered torch operators. `--trust-pickle` skips the check.
"""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

from analysis.errors import WorkbenchError, first_line

MAX_EXPRESSION_CHARS = 2000
# Members of a current-format archive with one program named "model" (paths below the archive's root).
_FIXED_MEMBERS = {
    "archive_format",
    "archive_version",
    "byteorder",
    ".data/version",
    ".data/serialization_id",
    "models/model.json",
    "data/weights/model_weights_config.json",
    "data/constants/model_constants_config.json",
    "data/sample_inputs/model.pt",
}
_PAYLOAD = re.compile(r"^data/(weights/weight_\d+|constants/tensor_\d+)$")
# Operator namespaces whose ops compute on tensors; a node calling anything else is refused.
OPERATOR_NAMESPACES = ("aten", "prims", "higher_order", "quantized", "quantized_decomposed", "_quantized")
_OPERATOR = re.compile(
    r"^torch\.ops\.(" + "|".join(OPERATOR_NAMESPACES) + r")\.[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?$"
)
_PYTHON_OPERATORS = {
    "getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs", "eq", "ne",
    "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "invert", "lshift", "rshift",
}  # fmt: skip
_MATH = {"ceil", "floor", "trunc", "sqrt", "log2", "pow"}
# What a symbolic-shape expression may call: sympy's constructors as `srepr` writes them (Add, Mul,
# Integer, Symbol, comparisons, ...) and the functions `torch.utils._sympy.functions` defines (its
# `__all__` in torch 2.13).
_SYMPY_CALLS = {
    "Symbol", "Integer", "Float", "Rational", "Add", "Mul", "Pow", "Max", "Min", "Abs", "sign", "Eq", "Ne",
    "Lt", "Le", "Gt", "Ge", "Equality", "Unequality", "StrictLessThan", "LessThan", "StrictGreaterThan",
    "GreaterThan", "And", "Or", "Not", "floor", "ceiling", "sqrt", "Piecewise", "ExprCondPair", "Tuple",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt", "FloorToInt",
    "CeilDiv", "IntTrueDiv", "FloatTrueDiv", "LShift", "RShift", "IsNonOverlappingAndDenseIndicator",
    "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "FloatPow", "PowByNatural",
    "Identity",
}  # fmt: skip
# Calls whose second argument is an exponent: a literal one is kept small, or sympy computes 9**9**9 for ever.
_POWERS = {"Pow", "PowByNatural", "FloatPow", "LShift"}
MAX_EXPONENT = 64
MAX_EXPONENT_PRODUCT = 4096
_SYMPY_NAMES = {
    "oo", "zoo", "nan", "int_oo", "pi", "E", "true", "false", "S", "Infinity", "NegativeInfinity",
    "IntInfinity", "NegativeIntInfinity", "One", "Zero", "NegativeOne", "Half", "BooleanTrue", "BooleanFalse",
}  # fmt: skip
_SHAPE_SYMBOL = re.compile(r"^[a-z]{1,8}\d{1,9}$")  # s0, u3, ...: torch's symbol names
_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Call, ast.Name, ast.Constant,
    ast.keyword, ast.Load, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub,
    ast.UAdd, ast.Not, ast.Invert, ast.And, ast.Or, ast.BitAnd, ast.BitOr, ast.BitXor, ast.Eq, ast.NotEq,
    ast.Lt, ast.LtE, ast.Gt, ast.GtE,
)  # fmt: skip


def _refuse(path: Path, why: str) -> WorkbenchError:
    return WorkbenchError(
        f"{path} {why}, and loading that runs code: pass --trust-pickle only if you trust where the file "
        "came from, or save it again as .pt2 / .onnx / .pruned.safetensors from your own model"
    )


def _members(path: Path) -> tuple[zipfile.ZipFile, str, list[str]]:
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise WorkbenchError(f"cannot read {path} as a torch.export archive: {first_line(exc)}") from exc
    names = [i.filename for i in archive.infolist() if not i.filename.endswith("/")]
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1 or not all("/" in n for n in names):
        archive.close()
        # Older torch.export archives keep their members at the top; torch reads those with pickle.
        raise _refuse(path, "has an older or unknown archive layout (no single top-level folder)")
    root = roots.pop()
    return archive, root, [n.split("/", 1)[1] for n in names]


def check_pt2(path: str | Path) -> None:
    """WorkbenchError unless `torch.export.load(path)` can run without unpickling or evaluating anything
    from the file (module docstring)."""
    path = Path(path)
    archive, root, names = _members(path)
    with archive:

        def read(name: str) -> bytes:
            return archive.read(f"{root}/{name}")

        for name in names:
            if name not in _FIXED_MEMBERS and not _PAYLOAD.match(name) and not name.startswith("extra/"):
                raise _refuse(path, f"holds {name!r}, which is not part of a plain exported program")
        for required in ("archive_format", "archive_version", "models/model.json"):
            if required not in names:
                raise WorkbenchError(f"{path} is not a torch.export archive: it has no {required}")
        if read("archive_format").decode(errors="replace").strip() != "pt2":
            raise WorkbenchError(f"{path} is not a torch.export archive (archive_format is not pt2)")
        for config in (
            "data/weights/model_weights_config.json",
            "data/constants/model_constants_config.json",
        ):
            if config in names:
                _check_payloads(path, config, _json(path, read(config)))
        if "data/sample_inputs/model.pt" in names:
            _check_sample_inputs(path, read("data/sample_inputs/model.pt"))
        _check_program(path, _json(path, read("models/model.json")))


def _json(path: Path, raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise WorkbenchError(f"{path}: a JSON member of the archive is broken ({first_line(exc)})") from exc


def _check_payloads(path: Path, config_name: str, config: Any) -> None:
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise WorkbenchError(f"{path}: {config_name} has no 'config' table")
    for fqn, meta in entries.items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            raise _refuse(path, f"stores {fqn!r} as a pickle")
        name = meta.get("path_name")
        if not isinstance(name, str) or not re.fullmatch(r"(weight|tensor)_\d+", name):
            raise _refuse(path, f"stores {fqn!r} as {name!r}, not as a plain tensor")
        if not isinstance(meta.get("tensor_meta"), dict):
            raise WorkbenchError(f"{path}: {fqn!r} has no tensor description")


def _check_sample_inputs(path: Path, raw: bytes) -> None:
    import torch

    try:
        value = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:
        # torch.export.load would retry this with weights_only=False, i.e. unpickle arbitrary objects.
        raise _refuse(path, "has sample inputs that only a full unpickler reads") from exc
    if not isinstance(value, (tuple, dict)):
        raise WorkbenchError(f"{path}: its sample inputs are a {type(value).__name__}, not a tuple")


def _check_program(path: Path, program: Any) -> None:
    if not isinstance(program, dict) or not isinstance(program.get("graph_module"), dict):
        raise WorkbenchError(f"{path}: models/model.json is not a serialized exported program")
    if program.get("guards_code"):
        raise _refuse(path, "carries guard code (Python source that loading executes)")
    ranges = program.get("range_constraints") or {}
    if not isinstance(ranges, dict):
        raise WorkbenchError(f"{path}: range_constraints is not a table")
    for key in ranges:
        check_expression(path, key)
    _walk(path, program)


def _walk(path: Path, value: Any) -> None:
    """Every node target and every symbolic expression anywhere in the program (subgraphs included)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "target" in item and "inputs" in item and "outputs" in item:
                check_target(path, item["target"])
            for key, sub in item.items():
                if key == "expr_str":
                    check_expression(path, sub)
                else:
                    stack.append(sub)
        elif isinstance(item, list):
            stack.extend(item)


def check_target(path: Path, target: Any) -> None:
    """A graph node may call a registered torch operator, a Python operator or a `math` function."""
    if not isinstance(target, str):
        raise WorkbenchError(f"{path}: a graph node has a target that is not a name")
    module, _, name = target.partition(".")
    if _OPERATOR.match(target):
        return
    if (module == "_operator" and name in _PYTHON_OPERATORS) or (module == "math" and name in _MATH):
        return
    raise _refuse(path, f"has a graph node calling {target[:80]!r}, which is not a torch operator")


def check_expression(path: Path, text: Any) -> None:
    """A symbolic-shape expression that `sympy.sympify` may evaluate: numbers, shape symbols, arithmetic,
    comparisons and sympy's / torch's shape functions; no attribute, subscript, name or call besides."""
    if not isinstance(text, str) or len(text) > MAX_EXPRESSION_CHARS:
        raise _refuse(path, "has a shape expression that is not a short formula")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise _refuse(path, f"has a shape expression that is not a formula ({text[:60]!r})") from None
    product = 1
    for node in ast.walk(tree):
        if not isinstance(node, _NODES) or not _allowed_node(node):
            raise _refuse(path, f"has a shape expression that is not a formula ({text[:60]!r})")
        exponent = _exponent(node)
        if exponent is not None:
            product *= max(1, abs(exponent))
            if abs(exponent) > MAX_EXPONENT or product > MAX_EXPONENT_PRODUCT:
                raise _refuse(path, f"has a shape expression with a huge power ({text[:60]!r})")


def _exponent(node: ast.AST) -> int | None:
    """The literal exponent of a power (`a ** 3`, `Pow(a, Integer(3))`), None for anything else."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        argument = node.right
    elif isinstance(node, ast.Call) and node.func.id in _POWERS and len(node.args) == 2:
        argument = node.args[1]
    else:
        return None
    if (
        isinstance(argument, ast.Call)
        and getattr(argument.func, "id", None) in ("Integer", "Float")
        and argument.args
    ):
        argument = argument.args[0]
    if isinstance(argument, ast.UnaryOp) and isinstance(argument.op, ast.USub):
        argument = argument.operand
    if isinstance(argument, ast.Constant) and isinstance(argument.value, (int, float)):
        return int(min(abs(argument.value), 2**62))
    return None


def _allowed_node(node: ast.AST) -> bool:
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Name) and node.func.id in _SYMPY_CALLS and _plain_arguments(node)
    if isinstance(node, ast.Name):
        return node.id in _SYMPY_CALLS or node.id in _SYMPY_NAMES or bool(_SHAPE_SYMBOL.match(node.id))
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, str):
            return bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,31}", value))
        return isinstance(value, (bool, float)) or (isinstance(value, int) and abs(value) < 2**63)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        # A tower like 9**9**9 would make sympy compute for ever: exponents are small literal integers.
        exponent = node.right
        return (
            isinstance(exponent, ast.Constant)
            and isinstance(exponent.value, int)
            and abs(exponent.value) <= 64
        )
    if isinstance(node, ast.keyword):
        return (
            node.arg is not None
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, bool)
        )
    return True


def _plain_arguments(node: ast.Call) -> bool:
    return not any(isinstance(a, ast.Starred) for a in node.args)


__all__ = ["OPERATOR_NAMESPACES", "check_expression", "check_pt2", "check_target"]
