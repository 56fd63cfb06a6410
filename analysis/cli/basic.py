"""`summary`, `evaluate` and `latency`: what a model costs, how well it does, how fast it runs."""

from __future__ import annotations

import argparse

from analysis.cli.common import (
    add_common_run_args,
    add_data_args,
    add_device_args,
    add_limit_arg,
    add_metric_arg,
    add_model_args,
    add_output_args,
    check_counts,
    device_options,
    metric_option,
    record,
    warn,
)
from analysis.cli.loading import load_inputs
from analysis.cli.runtimes import (
    add_runtime_arg,
    evaluate_on_runtimes,
    for_model,
    latency_on_runtimes,
    runtime_names,
)
from analysis.cost import onnx_summary, summarize
from analysis.errors import WorkbenchError, first_line
from analysis.evaluate import evaluate
from analysis.latency import DEFAULT_BATCH_SIZE, measure_latency
from analysis.model.inputs import as_input_spec
from analysis.model.outputs import describe_outputs, flatten_outputs
from analysis.model.specs import load_model


def _summary(args: argparse.Namespace) -> dict:
    loaded = load_inputs(args)
    payload = onnx_summary(summarize(loaded.model, loaded.input_shape).to_dict(), loaded.model)
    data = loaded.data.spec if loaded.data is not None else None
    record(args, "summary", loaded.model, data, {"input_shape": payload["input_shape"]}, payload)
    return payload


def _evaluate(args: argparse.Namespace) -> dict:
    check_counts(args, "batch_size", "limit")
    metric = metric_option(args)
    device, dtype = device_options(args)
    runtimes = runtime_names(args)
    loaded = load_inputs(args, need_data=True, allow_no_data=True)
    runtimes = for_model(runtimes, loaded.model)
    params = {"batch_size": args.batch_size, "limit": args.limit, "device": args.device, "dtype": dtype}
    if metric != "auto":
        params["metric"] = metric
    params["runtimes"] = runtimes
    if loaded.data is None:
        # Never measured on data the model was not made for: accuracy is absent, and said so.
        payload = {"accuracy": None, "loss": None, "samples": 0, "notes": loaded.notes}
        payload |= {"model": args.model, "data": None}
        warn(loaded.notes[0])
    else:
        score, notes = _scoring(args, loaded, metric)
        if runtimes and device is None and dtype is None:  # --device/--dtype: the eager path below
            payload = evaluate_on_runtimes(
                loaded.model, loaded.data, loaded.input_shape, runtimes, args.batch_size, score
            )
        else:
            result = evaluate(
                loaded.model,
                loaded.data,
                batch_size=args.batch_size,
                device=device,
                dtype=dtype,
                metric=score,
            )
            payload = result.to_dict()
            if device is not None or dtype is not None:
                payload |= {"device": str(device or "cpu"), "dtype": dtype or "float32"}
        payload |= {"model": args.model, "data": loaded.data.spec}
        if notes:
            payload["notes"] = notes
        if args.reference:
            params["reference"] = args.reference
    record(args, "evaluation", loaded.model, payload["data"], params, payload)
    return payload


def _scoring(args: argparse.Namespace, loaded, metric: str):
    """`--metric` bound to the original model, whose outputs the fidelity metrics (agreement, kl, mse,
    cosine, psnr) compare with: `--reference` (with `--reference-weights`) where given, else the model
    itself (its own best score by definition, which a note says). Returns the scoring and the notes."""
    from analysis.metrics import scoring

    if not args.reference:
        score = scoring(metric, loaded.model, loaded.data)
        if not score.needs_reference:
            return score, []
        return score, [
            f"scored against the model's own outputs ({score.name} is then its best value): to score a "
            "compressed model, give its original as --reference SPEC (and --reference-weights FILE)"
        ]
    reference = load_model(args.reference, weights=args.reference_weights, trust_pickle=args.trust_pickle)
    try:
        score = scoring(metric, reference, loaded.data)
        theirs = _sample_outputs(reference, loaded.data)
    except WorkbenchError:
        raise
    except Exception as exc:  # a model that does not take the data fails in its own way
        raise WorkbenchError(
            f"--reference {args.reference} does not run on the data: {first_line(exc)}"
        ) from exc
    mine = _sample_outputs(loaded.model, loaded.data)
    if score.needs_reference and {k: v.shape for k, v in mine.items()} != {
        k: v.shape for k, v in theirs.items()
    }:
        raise WorkbenchError(
            f"--reference {args.reference} gives {describe_outputs(theirs)} but the model gives "
            f"{describe_outputs(mine)}: give the original this model was compressed from"
        )
    return score, []


def _sample_outputs(model, data) -> dict:
    """The outputs of `model` on two samples of `data`, by name."""
    import torch

    from analysis.model.inputs import as_model_inputs
    from analysis.model.layers import call_model

    with torch.inference_mode():
        return flatten_outputs(call_model(model.eval(), as_model_inputs(data.x[:2])))


def _latency(args: argparse.Namespace) -> dict:
    check_counts(args, "batch_size", "runs", "threads")
    device, dtype = device_options(args)
    runtimes = runtime_names(args)
    loaded = load_inputs(args)
    runtimes = for_model(runtimes, loaded.model)
    if runtimes and device is None and dtype is None:  # --device/--dtype: the eager path below
        payload = latency_on_runtimes(
            loaded.model, loaded.input_shape, runtimes, args.batch_size, args.threads, args.runs
        )
    else:
        result = measure_latency(
            loaded.model,
            loaded.input_shape,
            batch_size=args.batch_size,
            threads=args.threads,
            runs=args.runs,
            device=device,
            dtype=dtype,
        )
        warn(result.warning)  # p90/p10 above 1.5: the median may be off
        payload = result.to_dict()
    shape = as_input_spec(loaded.input_shape).to_json()
    payload |= {"model": args.model, "input_shape": shape}
    if device is not None or dtype is not None:
        payload |= {"device": str(device or "cpu"), "dtype": dtype or "float32"}
    params = {
        "batch_size": args.batch_size,
        "threads": args.threads,
        "runs": args.runs,
        "device": args.device,
        "dtype": dtype,
        "input_shape": shape,
        "runtimes": runtimes,
    }
    record(args, "latency", loaded.model, None, params, payload)
    return payload


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("summary", help="params, MACs and FLOPs per layer and in total")
    add_model_args(p)
    add_data_args(p)
    add_common_run_args(p)
    add_output_args(p)
    p.set_defaults(func=_summary)

    p = subparsers.add_parser(
        "evaluate", help="the score in --metric (top-1 accuracy for labelled classifiers) and the mean loss"
    )
    add_model_args(p)
    add_data_args(p)
    add_metric_arg(p)
    p.add_argument(
        "--reference",
        help="the original model (a spec) that agreement, kl, mse, cosine and psnr compare with (default: "
        "the model itself); give it to score a compressed model on unlabelled data",
    )
    p.add_argument("--reference-weights", help="state dict (or .pruned.safetensors) for --reference")
    p.add_argument("--batch-size", type=int, default=256)
    add_limit_arg(p)
    add_device_args(p)
    add_runtime_arg(p, "evaluate on each of these runtimes (default: eager; the first one gives accuracy)")
    add_common_run_args(p)
    add_output_args(p)
    p.set_defaults(func=_evaluate)

    p = subparsers.add_parser("latency", help="median, p10 and p90 forward-pass time")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    p.add_argument("--runs", type=int, default=30)
    add_device_args(p)
    add_runtime_arg(p, "time on each of these runtimes, in alternating rounds (default: eager)")
    add_common_run_args(p)
    add_output_args(p)
    p.set_defaults(func=_latency)
