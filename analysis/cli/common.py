"""Shared pieces of the command line: common options, loading, JSON output, one-line errors.

Each command group lives in a module of `analysis/cli/` (basic, rank, compress, plan, sensitivity, report)
with a `register(subparsers)` function; `main.py` builds the parser from them. A command's handler takes
the parsed args and returns the JSON payload (a dict).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from torch import nn

from analysis.checks import check_labels, model_outputs
from analysis.data import Dataset, load_data
from analysis.errors import WorkbenchError, first_line
from analysis.io import to_json, write_text_atomic
from analysis.specs import (
    DEFAULT_DATA,
    DEFAULT_MODEL,
    check_input_shape,
    load_model,
    model_input_shape,
    parse_input_shape,
)
from analysis.validate import parse_values


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model spec (default: %(default)s)")
    parser.add_argument("--weights", help="state dict for the model: .safetensors, .pt or .pth")
    parser.add_argument(
        "--trust-pickle", action="store_true", help="allow loading a whole pickled model (runs code)"
    )
    parser.add_argument("--input-shape", help="input shape with batch first, e.g. 1,3,224,224")


def add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", help=f"data spec: digits, tensors:<file>, imagefolder:<dir> (default: {DEFAULT_DATA})"
    )


def add_output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", default="-", help="write the result here ('-' = standard output)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


@dataclass
class Loaded:
    model: nn.Module
    data: Dataset | None
    input_shape: tuple[int, ...]


def load_inputs(args: argparse.Namespace, need_data: bool = False) -> Loaded:
    """The model, the data (when asked for or needed) and the per-sample input shape from common args."""
    model = load_model(args.model, weights=args.weights, trust_pickle=args.trust_pickle)
    explicit = parse_input_shape(args.input_shape) if getattr(args, "input_shape", None) else None
    data_spec = getattr(args, "data", None)
    data = None
    if data_spec or need_data:
        declared = explicit or getattr(model, "input_shape", None)
        data = load_data(data_spec or DEFAULT_DATA, declared)
        shape = explicit or data.input_shape
    else:
        shape = model_input_shape(model, explicit, args.model)
    check_input_shape(model, shape)
    if data is not None:  # labels past the model's outputs: a message, not torch's IndexError
        check_labels(data, model_outputs(model, shape))
    return Loaded(model, data, shape)


def emit(payload: dict, dest: str) -> None:
    """Write the JSON payload to `dest` atomically, or to standard output for '-'."""
    text = to_json(payload)
    if dest == "-":
        sys.stdout.write(text)
    else:
        write_text_atomic(dest, text)


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse, dispatch, write JSON; bad input becomes one line on stderr and exit code 2."""
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        payload = args.func(args)
        if payload is not None:
            emit(payload, args.json)
    except WorkbenchError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        # Errors from torch (an input shape the model does not take, say) are one line too; --debug shows more.
        if args.debug:
            raise
        print(
            f"error: {type(exc).__name__}: {first_line(exc)} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
    return 0


def option_list(text: str | None, kind, what: str) -> list | None:
    """A `--what` option's list (commas and/or spaces), None where the option was not given."""
    return None if text is None else parse_values(text, kind, f"--{what}", allow_empty=False)
