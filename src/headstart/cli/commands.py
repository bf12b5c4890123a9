"""What each ``headstart`` command does: call one library function with the parsed options and print its result.

Heavy libraries (torch, timm, transformers, sklearn) are imported inside the commands, never here,
so that ``--help`` and option errors stay fast.

Why this module is long: one short function per command (fifteen of them), and ``predict`` prints
three kinds of result (classes, values, label sets); splitting them would scatter one table of commands.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from headstart.cli.tables import confusion_table, metrics_table, prediction_table, profile_table, value_table
from headstart.config import FitConfig


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def cmd_fit(args: argparse.Namespace) -> None:
    """Every fit option comes from the parsed command line through FitConfig (its flags' conversions included)."""
    from headstart.api import fit_config

    config = FitConfig.from_cli(vars(args))
    run = fit_config(args.data, replace(config, quiet=config.quiet or args.json))
    _print_run(run, as_json=args.json)


def _print_run(run: Any, *, as_json: bool) -> None:
    from headstart.training import distributed

    if not distributed.is_main():  # under torchrun rank 0 speaks for all
        return
    if as_json:
        _print_json({"directory": str(run.directory), "metrics": run.metrics, "kept": run.history.kept(), "overfitting": run.history.overfitting(), "seconds": run.seconds})
        return
    from headstart.rundir import REPORT_NAME

    console = Console()
    if "test" in run.metrics:
        console.print(metrics_table("test", run.metrics["test"]))
    kept = run.history.kept()
    if kept is not None:
        console.print(f"kept: {kept['sentence']}", highlight=False, soft_wrap=True)
    report = Path(run.directory) / REPORT_NAME
    console.print(f"saved to {run.directory}" + (f"; report: {report}" if report.is_file() else ""), highlight=False, soft_wrap=True)


def cmd_pretrain(args: argparse.Namespace) -> None:
    """pretrain's options are fit's (a subset, with its own defaults in the parser) plus --arch."""
    from headstart.pretraining import pretrain_config

    config = FitConfig.from_cli(vars(args))
    run = pretrain_config(args.data, args.arch, replace(config, quiet=config.quiet or args.json))
    _print_run(run, as_json=args.json)
    if not args.json:
        print(f"use it as a backbone: headstart fit TARGET --backbone {run.directory}  (or profile / rank / advise)")


def cmd_resume(args: argparse.Namespace) -> None:
    from headstart.api import resume

    _print_run(resume(args.run, quiet=args.quiet or args.json), as_json=args.json)


def cmd_lr_find(args: argparse.Namespace) -> None:
    from headstart.analysis.lr_finder import find_lr

    result = find_lr(
        args.data,
        backbone=args.backbone or default_backbone(args.data),
        run=args.run,
        trainable_blocks=args.trainable_blocks,
        steps=args.steps,
        start=args.start,
        end=args.end,
        batch_size=args.batch_size,
        image_size=args.image_size,
        seed=args.seed,
        cache_dir=args.cache_dir,
        text_column=args.text_column,
        label_column=args.label_column,
        quiet=args.quiet or args.json,
    )
    plot = None if args.plot == "none" else result.plot(args.plot or f"lr-find-{Path(args.data).stem}.png")
    if args.json:
        _print_json({**result.to_dict(), "plot": str(plot) if plot else None})
        return
    what = "the head on cached features" if args.trainable_blocks == 0 else f"the top {args.trainable_blocks} blocks and the head"
    print(f"{what}: {result.describe()}" + (f"; plot {plot}" if plot else ""))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from headstart.inference import evaluate

    metrics = evaluate(args.run, args.data, split=args.split, text_column=args.text_column, label_column=args.label_column)
    if args.json:
        _print_json(metrics)
        return
    console = Console()
    console.print(metrics_table(f"{args.run} on {args.data} ({metrics['split']})", metrics))
    if "confusion_matrix" in metrics:
        console.print(confusion_table(metrics))


def _predict_inputs(model_modality: str, values: list[str]) -> list[Any]:
    if model_modality in ("image", "audio"):
        return [Path(v) for v in values]
    texts: list[str] = []
    for value in values:
        try:
            is_file = len(value) < 4096 and "\n" not in value and Path(value).is_file()
        except OSError:  # e.g. a long text is not a valid file name
            is_file = False
        path = Path(value)
        if is_file:
            texts += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            texts.append(value)
    return texts


def cmd_predict(args: argparse.Namespace) -> None:
    from headstart.inference import from_pretrained, predict

    output = Path(args.output) if args.output else None
    if output is not None:  # refused before any model is loaded: never overwrite user data
        if output.suffix.lower() not in (".csv", ".json"):
            raise ValueError(f"{output}: --output must end in .csv or .json")
        if output.exists() and not args.overwrite:
            raise FileExistsError(f"{output} exists; pass --overwrite to replace it or choose another --output")
    if args.top_k < 1 or args.batch_size < 1:
        raise ValueError("--top-k and --batch-size must be positive integers")
    model = from_pretrained(args.run)
    items = _predict_inputs(model.modality, args.inputs)
    if model.modality in ("image", "audio"):
        missing = [str(p) for p in items if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"{missing[0]}: no such {model.modality} file" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    results = predict(model, items, batch_size=args.batch_size)
    if model.task.name != "classification":
        _print_values(model, results, args, output)
        return
    rows = [{"input": r.item, "rank": rank, "label": label, "probability": p}
            for r in results for rank, (label, p) in enumerate(top_labels(r.probabilities, args.top_k), start=1)]  # fmt: skip
    records = [{**r.__dict__, "top": [{"label": label, "probability": p} for label, p in top_labels(r.probabilities, args.top_k)]} for r in results]
    if output is not None:
        _write_predictions(output, rows, records)
        print(f"wrote {len(results)} predictions ({args.top_k} label{'s' if args.top_k > 1 else ''} each) to {output}")
    elif args.json:
        _print_json(records)
    else:
        Console().print(prediction_table(rows, top_k=args.top_k, files=model.modality in ("image", "audio")))


def _print_values(model: Any, results: list[Any], args: argparse.Namespace, output: Path | None) -> None:
    """``predict`` of a regression model (one value per input, in target units) or a multi-label one (the predicted
    labels, and the ``--top-k`` highest label probabilities)."""
    if model.task.name == "regression":
        columns = ["input", model.classes[0]]
        rows = [{"input": r.item, model.classes[0]: f"{r.value:.6g}"} for r in results]
        records = [{"item": r.item, "value": r.value} for r in results]
    else:
        columns = ["input", "labels", "scores"]
        rows = [{"input": r.item, "labels": r.label, "scores": ", ".join(f"{label} {p:.3f}" for label, p in top_labels(r.probabilities, args.top_k))} for r in results]
        records = [{"item": r.item, "labels": r.labels, "probabilities": r.probabilities} for r in results]
    if output is not None:
        _write_predictions(output, rows, records, columns)
        print(f"wrote {len(results)} predictions to {output}")
    elif args.json:
        _print_json(records)
    else:
        Console().print(value_table(rows, columns, files=model.modality in ("image", "audio")))


def top_labels(probabilities: dict[str, float], k: int) -> list[tuple[str, float]]:
    """The ``k`` most probable labels, most probable first (ties in the run's class order)."""
    return sorted(probabilities.items(), key=lambda pair: -pair[1])[:k]


def _write_predictions(output: Path, rows: list[dict[str, Any]], records: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    """CSV: one row per input and rank (``columns``: one per input, for regression and multi-label); JSON: as ``--json`` prints (written atomically)."""
    import csv

    from headstart.io import atomic_path

    with atomic_path(output) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        if output.suffix.lower() == ".csv":
            writer = csv.DictWriter(handle, fieldnames=columns or ["input", "rank", "label", "probability"])
            writer.writeheader()
            writer.writerows(rows if columns else ({**row, "probability": f"{row['probability']:.6f}"} for row in rows))
        else:
            json.dump(records, handle, indent=2)


def cmd_summary(args: argparse.Namespace) -> None:
    from headstart.backbones import create_backbone
    from headstart.freezing import BlockState, FreezeReport, freeze_report, norm_kinds
    from headstart.model import TransferModel
    from headstart.rundir import is_run_dir, read_run_config

    target = args.model
    run = is_run_dir(target)
    trained = read_run_config(target).get("training", {}).get("blocks") if run else None
    model: Any = TransferModel.from_pretrained(target) if run else create_backbone(target, pretrained=False)
    model.train()  # show the modes training would use: frozen blocks' BatchNorm stays in eval
    # a run: the frozen/trainable state its training ended with (a reloaded model is all trainable)
    report = FreezeReport(tuple(BlockState(**row) for row in trained)) if trained else freeze_report(model)
    backbone = model.backbone if run else model
    widths = backbone.block_widths()  # what a cut after each block gives: --cut, profile, the embedding cache
    norms = {block.name: norm_kinds(block.module) for block in model.blocks}
    if args.json:
        rows = [{**row, "width": widths.get(str(row["name"])), "norms": norms.get(str(row["name"]), "-")} for row in report.to_rows()]
        _print_json({"model": target, "blocks": rows, "trainable": report.trainable, "frozen": report.frozen, "splittable": backbone.splittable})
        return
    table = Table(title=f"{target}: {len(report.blocks)} blocks")
    for col in ("#", "block", "parameters", "width", "trainable", "norm layers", "BN mode"):
        table.add_column(col, justify="right" if col in ("#", "parameters", "width") else "left")
    for i, b in enumerate(report.blocks):
        width = str(widths[b.name]) if b.name in widths else "-"
        table.add_row(str(i), b.name, f"{b.parameters:,}", width, "yes" if b.trainable else "frozen", norms.get(b.name, "-"), b.batchnorm_mode)
    table.caption = str(report) + ("" if backbone.splittable else "; one block: no exact block layout, so fine-tune and gradual refuse it")
    Console().print(table)


def cmd_list(args: argparse.Namespace) -> None:
    from headstart.backbones import list_backbones

    specs = list_backbones()
    if args.json:
        _print_json([s.__dict__ for s in specs])
        return
    table = Table(title="embedded backbones (offline); also timm:<arch>, hf:<id or folder>, <run dir>")
    for col in ("name", "modality", "architecture", "description"):
        table.add_column(col)
    installed = {s.name for s in list_backbones(installed=True)}
    for s in specs:
        table.add_row(s.name, s.modality, s.architecture, s.description + ("" if s.name in installed else " (not installed)"))
    Console().print(table)


def default_backbone(data: str) -> str:
    """minilm for a table of texts; efficientnet_lite0 for images, audio (as spectrograms) and listings of their files."""
    from headstart.data import TABLE_EXTENSIONS, table_lists_files

    is_table = Path(data).suffix.lower() in TABLE_EXTENSIONS and Path(data).is_file()
    return "minilm" if is_table and not table_lists_files(data) else "efficientnet_lite0"


def cmd_profile(args: argparse.Namespace) -> None:
    from headstart.analysis.probes import profile

    blocks = [int(b) if b.lstrip("-").isdigit() else b for b in args.blocks.split(",")] if args.blocks else None
    result = profile(
        args.data,
        backbone=args.backbone or (None if args.run else default_backbone(args.data)),
        blocks=blocks,
        every=args.every,
        limit=args.limit,
        folds=args.folds,
        tolerance=args.tolerance,
        batch_size=args.batch_size,
        seed=args.seed,
        cache_dir=args.cache_dir,
        quiet=args.quiet or args.json,
        text_column=args.text_column,
        label_column=args.label_column,
        run=args.run,
    )
    plot = None if args.plot == "none" else result.plot(args.plot or f"profile-{Path(args.data).stem}-{result.backbone.replace(':', '_').replace('/', '_')}.png")
    if args.json:
        _print_json({**result.to_dict(), "plot": str(plot) if plot else None})
        return
    table = profile_table(result, folds=args.folds)
    table.caption += f"; features {result.seconds['features']:.0f}s, scores {result.seconds['scores']:.0f}s" + (f"; plot {plot}" if plot else "")
    Console().print(table)


def cmd_rank(args: argparse.Namespace) -> None:
    from headstart.analysis.ranking import default_candidates, rank
    from headstart.data import load_dataset

    named = [b.strip() for b in args.backbones.split(",") if b.strip()] if args.backbones else []
    dataset = load_dataset(args.data, text_column=args.text_column, label_column=args.label_column, seed=args.seed)  # its modality picks the candidates
    result = rank(
        dataset,
        backbones=named if args.only else default_candidates(dataset.modality, named),
        score_name=args.score,
        limit=args.limit,
        batch_size=args.batch_size,
        seed=args.seed,
        cache_dir=args.cache_dir,
        quiet=args.quiet or args.json,
    )
    if args.json:
        _print_json(result.to_dict())
        return
    table = Table(title=f"backbones for {result.data} by {result.score_name} ({result.n_examples} examples)")
    for col in ("rank", "backbone", result.score_name, "dim", "seconds", "note"):
        table.add_column(col, justify="left" if col in ("backbone", "note") else "right")
    for i, c in enumerate(result.candidates, start=1):
        table.add_row(str(i), c.backbone, f"{c.score:.4f}", str(c.dim), f"{c.seconds:.1f}", c.note)
    Console().print(table)


def cmd_advise(args: argparse.Namespace) -> None:
    from headstart.analysis.advisor import advise

    advice = advise(
        args.data,
        backbone=args.backbone or default_backbone(args.data),
        limit=args.limit,
        every=args.every,
        seed=args.seed,
        cache_dir=args.cache_dir,
        quiet=args.quiet or args.json,
        text_column=args.text_column,
        label_column=args.label_column,
    )
    if args.json:
        _print_json(advice.to_dict())
        return
    console = Console()
    if advice.profile is not None:
        console.print(profile_table(advice.profile))
    table = Table(title=f"advice: {advice.case} -> {advice.strategy}", show_header=False)
    table.add_column("why")
    for line in advice.rationale:
        table.add_row(line)
    console.print(table)
    costs = Table(title="expected on this machine (the pick: the cheapest within 1 point of the best)")
    for column in ("candidate", "expected accuracy", "expected time"):
        costs.add_column(column, justify="left" if column == "candidate" else "right")
    for c in advice.candidates:
        mark = " (pick)" if c.name == advice.measurements.get("pick") else " (baseline)" if c.strategy is None else ""
        costs.add_row(c.name + mark, f"{c.accuracy:.3f} ± {c.spread:.3f}", f"{c.seconds:.0f} s" if c.measured else "-")
    console.print(costs)
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in advice.fit_kwargs.items())
    console.print(f"next: headstart fit {args.data} --strategy {advice.strategy} {flags}".rstrip(), highlight=False, soft_wrap=True)


def cmd_report(args: argparse.Namespace) -> None:
    from headstart.report import write_report

    path = write_report(args.run, compare=args.compare or (), out=args.out)
    if args.json:
        _print_json({"report": str(path)})
        return
    print(f"wrote {path}")


def cmd_export(args: argparse.Namespace) -> None:
    from headstart.export import export_model

    result = export_model(args.run, format=args.format, out=args.out, overwrite=args.overwrite)
    if args.json:
        _print_json(result.to_dict())
        return
    print(f"wrote {result.model} (inputs: {', '.join(result.inputs)}; output: logits) and {result.preprocessing}")


def cmd_demo(args: argparse.Namespace) -> None:
    from headstart.demo import run_demo

    run_demo(limit=args.limit, epochs=args.epochs, image_size=args.image_size, quiet=args.quiet, out=args.out, overwrite=args.overwrite)


def cmd_stylize(args: argparse.Namespace) -> None:
    import time

    from headstart.io import atomic_path
    from headstart.style import stylize

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it or choose another --out")
    formats = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
    if out.suffix.lower() not in formats:
        raise ValueError(f"{out}: --out must end in .png, .jpg or .webp")
    layers = [name for name in args.layers.split(",") if name] if args.layers else None
    start = time.perf_counter()
    image = stylize(
        args.content,
        args.style,
        backbone=args.backbone,
        weights=args.weights,
        size=args.size or None,
        style_scale=args.style_scale,
        content_layer=args.content_layer,
        style_layers=layers,
        content_weight=args.content_weight,
        style_weight=args.style_weight,
        tv_weight=args.tv_weight,
        transform=args.transform,
        temperature=args.temperature,
        steps=args.steps,
        optimizer=args.optimizer,
        lr=args.lr,
        parameterization=args.parameterization,
        init=args.init,
        seed=args.seed,
        progress=not args.quiet,
    )
    with atomic_path(out) as tmp:
        image.save(tmp, format=formats[out.suffix.lower()])
    print(f"saved {out} ({image.width}x{image.height}) in {time.perf_counter() - start:.1f} s")


def cmd_ui(args: argparse.Namespace) -> None:
    from headstart.ui import serve  # raises ImportError naming `pip install "headstart[ui]"` without the extra

    serve(allowed=args.allow or ["."], project=args.project, host=args.host, port=args.port, max_unpacked=args.max_upload_mb * 1024**2, open_browser=args.open)
