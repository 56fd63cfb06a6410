"""Every check of user input in one place, with one wording per error (a `WorkbenchError`, one line).

Used by the plan, the sweeps, pruning, the command line and the pages. `where` prefixes a message with
the place the value came from ("layer 'fc'", "default", "group 'conv1'").
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from analysis.errors import WorkbenchError

MIN_BITS, MAX_BITS = 2, 16
UNTOUCHED_BITS = 32  # a plan's "bits": 32 leaves the float weights as they are


def few(names: Iterable[str], shown: int = 8) -> str:
    """The first `shown` names, comma-separated, with the total when there are more."""
    names = list(names)
    return ", ".join(names[:shown]) + (f", ... ({len(names)} in all)" if len(names) > shown else "")


def _prefix(where: str | None) -> str:
    return f"{where}: " if where else ""


def _number(value: Any) -> float | None:
    """`value` as a float when it is a real number or text of one (not a bool), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return float(value) if isinstance(value, numbers.Real) else None


def ratio(value: Any, where: str | None = None) -> float:
    """A prune ratio: the fraction of channels or weights removed, in [0, 1)."""
    number = _number(value)
    if number is None:
        raise WorkbenchError(
            f"{_prefix(where)}ratio {value!r} is not a number: give a fraction in [0, 1), e.g. 0.5"
        )
    if not math.isfinite(number) or not 0.0 <= number < 1.0:
        raise WorkbenchError(
            f"{_prefix(where)}ratio {value} is outside [0, 1): a ratio is the fraction removed, e.g. 0.5"
        )
    return number


def bits(value: Any, where: str | None = None, untouched: bool = False) -> int:
    """A bit width in MIN_BITS..MAX_BITS (or UNTOUCHED_BITS, where `untouched` allows leaving weights be)."""
    number = _number(value)
    also = f", or {UNTOUCHED_BITS} to leave the weights as they are" if untouched else ""
    if number is None:
        raise WorkbenchError(
            f"{_prefix(where)}bit width {value!r} is not a number: choose {MIN_BITS} to {MAX_BITS}{also}"
        )
    whole_number = math.isfinite(number) and number.is_integer()
    if not whole_number or not (MIN_BITS <= number <= MAX_BITS or (untouched and number == UNTOUCHED_BITS)):
        raise WorkbenchError(
            f"{_prefix(where)}bit width {value} is outside {MIN_BITS}..{MAX_BITS}: "
            f"choose a whole number from {MIN_BITS} to {MAX_BITS}{also}"
        )
    return int(number)


def ratios(values: Iterable[Any]) -> tuple[float, ...]:
    """Sorted unique ratios, each in [0, 1), at least one."""
    out = [ratio(v) for v in values]
    if not out:
        raise WorkbenchError("no ratios given: give at least one ratio in [0, 1)")
    return tuple(sorted(set(out)))


def bit_widths(values: Iterable[Any]) -> tuple[int, ...]:
    """Unique bit widths in MIN_BITS..MAX_BITS, widest first (the order a sweep runs them), at least one."""
    out = [bits(v) for v in values]
    if not out:
        raise WorkbenchError(f"no bit widths given: give at least one in {MIN_BITS}..{MAX_BITS}")
    return tuple(sorted(set(out), reverse=True))


def whole(value: Any, what: str, minimum: int = 1, maximum: int | None = None) -> int:
    """A whole number of at least `minimum` (and at most `maximum`, where given): a count, a batch size,
    a number of threads, ..."""
    number = _number(value)
    if number is None or not math.isfinite(number) or not number.is_integer() or number < minimum:
        raise WorkbenchError(f"{what} must be a whole number of at least {minimum}, got {value!r}")
    if maximum is not None and number > maximum:
        raise WorkbenchError(f"{what} must be at most {maximum:,}, got {value!r}")
    return int(number)


def in_range(value: Any, what: str, low: float, high: float, low_open: bool = False) -> float:
    """A finite number in [low, high] (or (low, high] with `low_open`)."""
    number = _number(value)
    ok = number is not None and math.isfinite(number)
    ok = ok and (low < number if low_open else low <= number) and number <= high
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise WorkbenchError(f"{what} must be a number in {interval}, got {value!r}")
    return float(number)


def flag(value: Any, what: str) -> bool:
    """A real boolean (JSON true/false), not a string or a number."""
    if not isinstance(value, bool):
        raise WorkbenchError(f"{what} must be true or false, got {value!r}")
    return value


def choice(value: Any, options: Sequence[str], what: str, where: str | None = None) -> str:
    """One of `options`, compared lower-case without surrounding spaces."""
    key = value.strip().lower() if isinstance(value, str) else None
    if key not in options:
        raise WorkbenchError(f"{_prefix(where)}unknown {what} {value!r}: use one of {', '.join(options)}")
    return key


def criterion(value: Any, names: Sequence[str], where: str | None = None) -> str:
    """A registered importance criterion's name."""
    return choice(value, names, "importance criterion", where)


def known_keys(raw: Mapping[str, Any], keys: Sequence[str], where: str) -> None:
    """Refuse a key of `raw` outside `keys` (a typo in a plan, say)."""
    unknown = sorted(set(raw) - set(keys), key=str)
    if unknown:
        raise WorkbenchError(f"{where}: unknown key {unknown[0]!r}: use {', '.join(keys)}")


def check_layer_names(model: Any, names: Iterable[str], allowed: Mapping[str, Any]) -> list[str]:
    """`names`, unique and in order, each a module of `model` and a key of `allowed` (its prunable layers)."""
    names = list(dict.fromkeys(names))
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules:
            raise WorkbenchError(f"no layer named {name!r} in the model: choose one of {few(allowed)}")
        if name not in allowed:
            raise WorkbenchError(
                f"layer {name!r} is a {type(modules[name]).__name__}, not a prunable layer: choose Conv*d "
                f"(groups 1 or depthwise) or Linear layers, e.g. {few(allowed)}"
            )
    return names


def parse_values(
    text: str, kind: Callable[[str], Any] = float, what: str = "values", allow_empty: bool = True
) -> list:
    """`'0.1, 0.2 0.5'` -> `[0.1, 0.2, 0.5]`: items separated by commas and/or spaces, each read by `kind`
    (`int` also reads `8.0`). An empty text gives an empty list, or an error unless `allow_empty`."""
    out = []
    for item in text.replace(",", " ").split():
        try:
            out.append(_read(item, kind))
        except ValueError:
            raise WorkbenchError(
                f"{what}: {item!r} is not a number: give numbers separated by commas, e.g. 0.1, 0.5"
            ) from None
    if any(isinstance(v, float) and not math.isfinite(v) for v in out):
        raise WorkbenchError(f"{what}: {text!r} holds NaN or infinity: give finite numbers")
    if not out and not allow_empty:
        raise WorkbenchError(f"{what} is empty: give a list separated by commas, e.g. 0.1, 0.5")
    return out


def parse_names(text: str, what: str = "names", allow_empty: bool = True) -> list[str]:
    """`'conv1, fc  features.0'` -> `['conv1', 'fc', 'features.0']`: names separated by commas and/or spaces
    (the text twin of `parse_values`), duplicates dropped, order kept."""
    out = list(dict.fromkeys(text.replace(",", " ").split()))
    if not out and not allow_empty:
        raise WorkbenchError(f"{what} is empty: give names separated by commas or spaces, e.g. conv1, fc")
    return out


def _read(item: str, kind: Callable[[str], Any]) -> Any:
    if kind is int:
        number = float(item)
        return int(number) if number.is_integer() else number  # the range checks name a non-whole width
    return kind(item)


def require_data(criterion_name: str, data: Any) -> Any:
    """`data`, or a WorkbenchError saying that this criterion is data-driven."""
    if data is None:
        raise WorkbenchError(f"criterion {criterion_name!r} is data-driven: give a dataset (--data)")
    return data
