"""`sensitivity` and `report`: per-layer sweeps and the all-in-one HTML report (docs/contract.md section 3)."""

from __future__ import annotations

import argparse

from analysis.cli.common import (
    add_common_run_args,
    add_data_args,
    add_device_args,
    add_limit_arg,
    add_list_arg,
    add_metric_arg,
    add_model_args,
    add_output,
    add_output_args,
    add_ray_args,
    check_counts,
    device_options,
    list_names,
    list_values,
    long_run,
    metric_option,
    ray_options,
    record,
    stopped,
    warn,
)
from analysis.cli.loading import load_inputs
from analysis.cli.runtimes import add_runtime_arg, one_runtime
from analysis.errors import WorkbenchError
from analysis.report.files import write_csv, write_markdown
from analysis.report.html import build_report, runtime_latencies
from analysis.sensitivity.kinds import basic_kinds, get_sweep_kind, sweep_kinds
from analysis.sensitivity.sweep import sensitivity_sweep


def _list(value, kind, what: str) -> list | None:
    """A `--what` option's list (commas and/or spaces), None where the option was not given."""
    return list_names(value, f"--{what}") if kind is str else list_values(value, kind, f"--{what}")


def _sweep(loaded, args, run, ray: dict | None, device, dtype=None, runtime=None, **options):
    """One sweep, local (stops between layers on Ctrl-C) or on Ray; failed Ray layers on standard error."""
    if ray is None:
        return sensitivity_sweep(
            loaded.model,
            loaded.data,
            progress=run.progress,
            should_stop=run.should_stop,
            use_cache=not getattr(args, "no_cache", False),
            device=device,
            dtype=dtype,
            runtime=runtime,
            **options,
        )
    from analysis.distributed.ray_sweep import ray_sensitivity_sweep

    result = ray_sensitivity_sweep(
        loaded.model, loaded.data, progress=run.progress, should_stop=run.should_stop, **ray, **options
    )
    for name, why in result.failed_layers.items():
        warn(f"layer {name} could not be computed on Ray: {why}")
    return result


def _partial(result, run) -> bool:
    return bool(getattr(result, "partial", False)) or run.should_stop()


def swept_values(args: argparse.Namespace) -> tuple[list | None, list | None]:
    """(ratios, bits) for `--kind`: its kind (`analysis.sensitivity.kinds`) says which option its values
    come from (`--ranks` for lowrank's kept rank fractions); an unknown kind is one line listing them."""
    spec = get_sweep_kind(args.kind)
    ratios = _list(args.ratios, float, "ratios")
    if spec.parameter == "ranks" and args.ranks is not None:
        ratios = _list(args.ranks, float, "ranks")
    return ratios, _list(args.bits, int, "bits")


def _sensitivity(args: argparse.Namespace) -> dict:
    check_counts(args, "batch_size", "limit")
    ratios, bits = swept_values(args)
    layers = _list(args.layers, str, "layers")
    device, dtype = device_options(args)
    ray = ray_options(args)
    metric = metric_option(args)
    runtime = one_runtime(args, ray)
    loaded = load_inputs(args, need_data=True)
    options = dict(
        kind=args.kind,
        ratios=ratios,
        bits=bits,
        layers=layers,
        max_drop=args.max_drop,
        batch_size=args.batch_size,
        metric=metric,
    )
    with long_run(f"sensitivity ({args.kind})") as run:
        result = _sweep(loaded, args, run, ray, device, dtype=dtype, runtime=runtime, **options)
        partial = _partial(result, run)
    # Every output is written together with the JSON, all or none (a failing report leaves no new CSV).
    add_output(args, args.csv, lambda p: write_csv(result, p))
    title = f"Sensitivity of {args.model}"
    add_output(args, args.markdown, lambda p: write_markdown(result, p, title=title))
    add_output(
        args,
        args.out,
        lambda p: build_report(
            loaded.model,
            loaded.data,
            p,
            sensitivity=result,
            model_spec=args.model,
            input_shape=loaded.input_shape,
            metric=metric,
        ),
    )
    payload = result.to_dict() | {"model": args.model, "data": loaded.data.spec}
    if partial:
        payload["partial"] = True
    params = options | {"limit": args.limit, "device": args.device, "dtype": dtype, "ray": args.ray}
    params["runtime"] = runtime
    status = "partial" if partial else "complete"
    record(args, "sensitivity", loaded.model, loaded.data.spec, params, payload, status=status)
    if partial:
        stopped(args, "layers")
    return payload


def report_kinds(args: argparse.Namespace) -> list[str]:
    """`--kinds` (default: the basic kinds), each a registered kind (read when the command runs, so a late
    registration counts); an unknown one is one line listing them."""
    kinds = _list(args.kinds, str, "kinds") or list(basic_kinds())
    for kind in kinds:
        try:
            get_sweep_kind(kind)
        except WorkbenchError as exc:
            raise WorkbenchError(f"--kinds: {exc}") from None
    return kinds


def _report_runtimes(args: argparse.Namespace) -> list[str] | None:
    runtimes = _list(args.runtime, str, "runtime")
    if runtimes:
        from analysis.runtime.base import get_runtime

        runtimes = [get_runtime(name).name for name in runtimes]  # an unknown name is one line, before work
    return runtimes


def _report_latency(args: argparse.Namespace, loaded, runtimes, device, ran: dict):
    """The latency section: per runtime where --runtime names some, else eager; None with --no-latency."""
    if args.no_latency:
        return None
    if runtimes:
        latency = runtime_latencies(loaded.model, loaded.input_shape, runtimes, args.threads, ran)
        for item in latency.values():
            warn(item if isinstance(item, str) else item.warning)
    else:
        from analysis.latency import measure_latency

        latency = measure_latency(loaded.model, loaded.input_shape, device=device, threads=args.threads)
        warn(latency.warning)
    ran["sections"].append("latency")
    return latency


def _report_analyses(args, loaded, kinds, ray, device, metric, ran: dict):
    """The sweeps of each kind, then the rankings, as one stoppable run: (sweeps, rankings, partial)."""
    results, rankings = [], None
    with long_run("report") as run:
        step_total = len(kinds) + (0 if args.no_rankings else 1)
        for i, kind in enumerate(kinds):
            if run.should_stop():
                break

            def step(done: int, total: int, i: int = i) -> None:
                run.progress(i * total + done, step_total * total)

            sub = type(run)(step, run.should_stop, run.timer)
            results.append(_sweep(loaded, args, sub, ray, device, kind=kind, metric=metric))
            ran["sections"].append(f"sensitivity:{kind}")
        if not args.no_rankings and not run.should_stop():
            rankings = _rankings(loaded, args, ray, device, run.should_stop)
            if rankings is not None:
                ran["sections"].append("rankings")
        partial = any(_partial(r, run) for r in results) or run.should_stop()
    return results, rankings, partial


def _report_outputs(args, loaded, results, rankings, latency, metric) -> None:
    add_output(
        args,
        args.out,
        lambda p: build_report(
            loaded.model,
            loaded.data,
            p,
            sensitivity=results,
            rankings=rankings,
            latency=latency,
            model_spec=args.model,
            metric=metric,
        ),
    )
    if args.csv:
        add_output(args, args.csv, lambda p: write_csv(results, p))
    if args.markdown:
        title = f"Sensitivity of {args.model}"
        add_output(args, args.markdown, lambda p: write_markdown(results, p, title=title))


def _report(args: argparse.Namespace) -> dict:
    """options, latency, sweeps and rankings, outputs, record: each step one call."""
    kinds = report_kinds(args)
    check_counts(args, "limit")
    device, _ = device_options(args)
    ray = ray_options(args)
    metric = metric_option(args)
    runtimes = _report_runtimes(args)
    loaded = load_inputs(args, need_data=True)
    ran: dict = {"sections": ["environment", "summary", "baseline"]}
    latency = _report_latency(args, loaded, runtimes, device, ran)
    results, rankings, partial = _report_analyses(args, loaded, kinds, ray, device, metric, ran)
    ran["sensitivity"] = {r.kind: r.to_dict() for r in results}
    path = str(args.out)
    _report_outputs(args, loaded, results, rankings, latency, metric)
    payload = {"out": path, "model": args.model, "data": loaded.data.spec} | ran
    if isinstance(latency, dict):
        payload["latency"] = {k: v if isinstance(v, str) else v.to_dict() for k, v in latency.items()}
    elif latency is not None:
        payload["latency"] = latency.to_dict()
    if partial:
        payload["partial"] = True
    params = {
        "kinds": kinds,
        "limit": args.limit,
        "latency": not args.no_latency,
        "rankings": not args.no_rankings,
        "oracle": not args.no_oracle,
        "device": args.device,
        "ray": args.ray,
        "runtimes": runtimes,
        "metric": metric,
    }
    status = "partial" if partial else "complete"
    record(args, "report", loaded.model, loaded.data.spec, params, payload, status=status, artifacts=(path,))
    if partial:
        stopped(args, "analyses")
    return payload


def _rankings(loaded, args, ray: dict | None, device, should_stop):
    """The filter importance rankings for the report (the oracle unless --no-oracle); Ctrl-C stops them too."""
    if ray is None:
        from analysis.importance.rankings import rank_channels

        return rank_channels(
            loaded.model, loaded.data, oracle=not args.no_oracle, device=device, should_stop=should_stop
        )
    from analysis.distributed.ray_sweep import ray_rank_channels

    return ray_rank_channels(
        loaded.model, loaded.data, oracle=not args.no_oracle, should_stop=should_stop, **ray
    )


def _add_run_options(p: argparse.ArgumentParser, dtype: bool = False) -> None:
    """--device (--dtype), --ray, --no-record, --mlflow (issue 15 and 16 options of sensitivity and report)."""
    add_device_args(p, dtype=dtype)
    add_ray_args(p)
    add_common_run_args(p)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sensitivity", help="the score and loss with each layer compressed alone")
    add_model_args(p)
    add_data_args(p)
    add_metric_arg(p)
    kinds = ", ".join(sweep_kinds())
    p.add_argument("--kind", default="structured", help=f"what to do to each layer: {kinds}")
    add_list_arg(p, "--ratios", "pruning ratios in [0, 1), e.g. 0.1,0.3,0.5 (default 0.1 ... 0.9)", "RATIO")
    add_list_arg(
        p,
        "--bits",
        "bit widths in 2..16 for --kind quant, e.g. 4,8 (default 2,3,4,6,8); codebook bits in 1..8 for "
        "--kind share (default 8,6,5,4,3,2,1)",
        "BITS",
    )
    add_list_arg(
        p,
        "--ranks",
        "kept rank fractions in (0, 1) for --kind lowrank, e.g. 0.5,0.25 (default 0.75 ... 0.125)",
        "F",
    )
    add_list_arg(p, "--layers", "only these layers (structured: groups)", "LAYER")
    add_runtime_arg(
        p,
        "where every point is evaluated (default eager: only the layers after the change recomputed; "
        "onnxruntime: one export, weights swapped per point, a full pass each)",
    )
    p.add_argument(
        "--max-drop",
        type=float,
        help="stop a layer's sweep after a drop above this, in the metric's units (accuracy: 0.01 = 1 point)",
    )
    p.add_argument("--batch-size", type=int, default=256)
    add_limit_arg(p)
    p.add_argument("--no-cache", action="store_true", help="recompute the whole network per point (slower)")
    p.add_argument("--out", help="also write a self-contained HTML report here")
    p.add_argument("--csv", help="also write the long-form CSV here")
    p.add_argument("--markdown", help="also write a short Markdown summary here")
    _add_run_options(p, dtype=True)
    add_output_args(p)
    p.set_defaults(func=_sensitivity)

    p = subparsers.add_parser("report", help="every analysis in one self-contained HTML report")
    add_model_args(p)
    add_data_args(p)
    add_metric_arg(p)
    p.add_argument("--out", default="report.html", help="the HTML file (default: %(default)s)")
    add_list_arg(
        p, "--kinds", f"sensitivity kinds to run (default {','.join(basic_kinds())}): {kinds}", "KIND"
    )
    add_limit_arg(p)
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--no-rankings", action="store_true", help="skip the filter importance rankings")
    p.add_argument("--no-oracle", action="store_true", help="rankings without the (slow) oracle criterion")
    add_list_arg(
        p,
        "--runtime",
        "measure the latency on each of these runtimes: eager, onnxruntime (each with its version and "
        "execution provider; default eager)",
        "RUNTIME",
    )
    p.add_argument("--threads", type=int, default=None, help="intra-op threads for the latency")
    p.add_argument("--csv", help="also write every sweep's long-form CSV here")
    p.add_argument("--markdown", help="also write a short Markdown summary here")
    _add_run_options(p)
    add_output_args(p)
    p.set_defaults(func=_report)
