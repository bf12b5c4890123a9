"""``headstart`` command line: each command parses options, calls one library function, prints its result."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from headstart.errors import USER_ERRORS as _USER_ERRORS
from headstart.errors import error_line

# headstart.data.preprocessing.AUGMENT_PRESETS, spelled out so that `headstart --help` need not import torchvision
# (tests/test_cli.py checks the two agree).
AUGMENT_CHOICES = ("none", "light", "strong", "dihedral")
STRATEGY_CHOICES = ("feature-extraction", "fine-tune", "full", "gradual", "lora", "contrastive", "scratch")  # headstart.strategies.STRATEGIES, without importing torch for --help


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _metrics_table(title: str, metrics: dict[str, Any]) -> Table:
    table = Table(title=title)
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="right" if col != "class" else "left")
    for name, row in metrics["per_class"].items():
        table.add_row(name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    table.caption = (
        f"accuracy {metrics['accuracy']:.4f} · balanced {metrics['balanced_accuracy']:.4f} · "
        f"macro F1 {metrics['macro_f1']:.4f} · n={metrics['n']}"
    )
    return table


def _confusion_table(metrics: dict[str, Any]) -> Table:
    table = Table(title="confusion matrix (rows: true, columns: predicted)")
    table.add_column("")
    for name in metrics["classes"]:
        table.add_column(name, justify="right")
    for name, row in zip(metrics["classes"], metrics["confusion_matrix"]):
        table.add_row(name, *map(str, row))
    return table


def cmd_fit(args: argparse.Namespace) -> None:
    from headstart.api import fit

    run = fit(
        args.data,
        backbone=args.backbone,
        weights=args.weights,
        strategy=args.strategy,
        out=args.out,
        epochs=args.epochs,
        lr=args.lr,
        body_lr=args.body_lr,
        patience="default" if args.patience is None else args.patience,
        monitor=args.monitor,
        trainable_blocks=args.trainable_blocks,
        freeze=args.freeze,
        batchnorm=args.batchnorm,
        head_warmup=False if args.no_head_warmup else None,
        layer_decay=args.layer_decay,
        block_lrs=_block_lrs(args.block_lrs),
        l2sp=args.l2sp,
        bss=args.bss,
        unfreeze_blocks=args.unfreeze_blocks,
        lora_rank=args.lora_rank,
        label_templates=args.label_templates,
        accumulate=args.accumulate,
        grad_clip="default" if args.grad_clip is None else (args.grad_clip or None),
        precision=args.precision,
        torch_compile=args.torch_compile or None,
        cut=int(args.cut) if args.cut is not None and args.cut.lstrip("-").isdigit() else args.cut,
        hidden=args.hidden,
        dropout=args.dropout,
        augment=args.augment,
        image_size=args.image_size,
        tta=args.tta,
        batch_size=args.batch_size,
        seed=args.seed,
        overwrite=args.overwrite,
        quiet=args.quiet or args.json,
        cache_dir=args.cache_dir,
        text_column=args.text_column,
        label_column=args.label_column,
        log_to=args.log_to,
        log_uri=args.log_uri,
    )
    _print_run(run, as_json=args.json)


def _block_lrs(text: str | None) -> tuple[float, float] | dict[str, float] | None:
    """``LOW:HIGH`` (geometric from the first block to the head) or ``BLOCK=RATE,...`` (names or globs)."""
    if not text:
        return None
    try:
        if "=" not in text:
            low, high = text.split(":")
            return float(low), float(high)
        return {name.strip(): float(rate) for name, rate in (part.split("=") for part in text.split(",") if part.strip())}
    except ValueError:
        raise ValueError(f"--block-lrs {text!r}: write LOW:HIGH (e.g. 1e-5:1e-3) or BLOCK=RATE,... (e.g. 'layer5=1e-4,layer4=5e-5')") from None


def _print_run(run: Any, *, as_json: bool) -> None:
    from headstart.training import distributed

    if not distributed.is_main():  # under torchrun rank 0 speaks for all
        return
    if as_json:
        _print_json({"directory": str(run.directory), "metrics": run.metrics, "overfitting": run.history.overfitting(), "seconds": run.seconds})
        return
    console = Console()
    if "test" in run.metrics:
        console.print(_metrics_table("test", run.metrics["test"]))
    console.print(f"saved to {run.directory}")


def cmd_pretrain(args: argparse.Namespace) -> None:
    from headstart.pretraining import pretrain

    run = pretrain(
        args.data,
        arch=args.arch,
        out=args.out,
        epochs=args.epochs,
        lr=args.lr,
        patience=args.patience,
        image_size=args.image_size,
        augment=args.augment,
        batch_size=args.batch_size,
        seed=args.seed,
        overwrite=args.overwrite,
        quiet=args.quiet or args.json,
        cache_dir=args.cache_dir,
        text_column=args.text_column,
        label_column=args.label_column,
    )
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
        backbone=args.backbone or _default_backbone(args.data),
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
    console.print(_metrics_table(f"{args.run} on {args.data} ({metrics['split']})", metrics))
    console.print(_confusion_table(metrics))


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

    model = from_pretrained(args.run)
    items = _predict_inputs(model.modality, args.inputs)
    if model.modality in ("image", "audio"):
        missing = [str(p) for p in items if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"{missing[0]}: no such {model.modality} file" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    results = predict(model, items)
    if args.json:
        _print_json([r.__dict__ for r in results])
        return
    table = Table()
    for col in ("input", "label", "probability"):
        table.add_column(col)
    for r in results:
        table.add_row(r.item, r.label, f"{r.probability:.3f}")
    Console().print(table)


def cmd_summary(args: argparse.Namespace) -> None:
    from headstart.backbones import create_backbone
    from headstart.freezing import BlockState, FreezeReport, freeze_report
    from headstart.model import TransferModel

    target = args.model
    config = Path(target) / "config.json"
    trained = json.loads(config.read_text()).get("training", {}).get("blocks") if config.is_file() else None
    if trained:  # a run: the frozen/trainable state its training ended with (a reloaded model is all trainable)
        report = FreezeReport(tuple(BlockState(**row) for row in trained))
    else:
        model: Any = TransferModel.from_pretrained(target) if config.is_file() else create_backbone(target, pretrained=False)
        model.train()  # show the modes training would use: frozen blocks' BatchNorm stays in eval
        report = freeze_report(model)
    if args.json:
        _print_json({"model": target, "blocks": report.to_rows(), "trainable": report.trainable, "frozen": report.frozen})
        return
    table = Table(title=f"{target}: {len(report.blocks)} blocks")
    for col in ("#", "block", "parameters", "trainable", "BatchNorm layers", "BN mode"):
        table.add_column(col, justify="right" if col in ("#", "parameters", "BatchNorm layers") else "left")
    for i, b in enumerate(report.blocks):
        table.add_row(str(i), b.name, f"{b.parameters:,}", "yes" if b.trainable else "frozen", str(b.batchnorm_layers), b.batchnorm_mode)
    table.caption = str(report)
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
    for s in specs:
        table.add_row(s.name, s.modality, s.architecture, s.description)
    Console().print(table)


def _default_backbone(data: str) -> str:
    """minilm for a table of texts; efficientnet_lite0 for images, audio (as spectrograms) and listings of their files."""
    from headstart.data import TABLE_EXTENSIONS, table_lists_files

    is_table = Path(data).suffix.lower() in TABLE_EXTENSIONS and Path(data).is_file()
    return "minilm" if is_table and not table_lists_files(data) else "efficientnet_lite0"


def cmd_profile(args: argparse.Namespace) -> None:
    from headstart.analysis.probes import profile

    blocks = [int(b) if b.lstrip("-").isdigit() else b for b in args.blocks.split(",")] if args.blocks else None
    result = profile(
        args.data,
        backbone=args.backbone or (None if args.run else _default_backbone(args.data)),
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
    table = _profile_table(result, folds=args.folds)
    table.caption += f"; features {result.seconds['features']:.0f}s, scores {result.seconds['scores']:.0f}s" + (f"; plot {plot}" if plot else "")
    Console().print(table)


def _profile_table(result: Any, *, folds: int | None = None) -> Table:
    """Per-block probe accuracy, LogME and shift from the source's statistics, the plateau marked (for `profile` and `advise`)."""
    table = Table(title=f"{result.backbone} on {result.data}: {result.n_examples} examples" + (f", {folds}-fold linear probe" if folds else ""))
    shifts = result.mean_shift is not None
    for col in ("#", "block", "dim", "probe accuracy", "LogME", *(["shift"] if shifts else [])):
        table.add_column(col, justify="left" if col == "block" else "right")
    for r in result.rows:
        mark = " ← plateau" if r.block == result.plateau else ""
        cells = [str(r.index), r.block + mark, str(r.dim), f"{r.probe_accuracy:.3f} ± {r.probe_std:.3f}", f"{r.logme:.3f}"]
        table.add_row(*cells, *([f"{r.shift:.3f}" if r.shift is not None else ""] if shifts else []), style="bold" if mark else None)
    table.caption = f"plateau: {result.plateau} (first block within {result.tolerance * 100:g} points of the best, {result.best})"
    return table


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
        backbone=args.backbone or _default_backbone(args.data),
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
        console.print(_profile_table(advice.profile))
    table = Table(title=f"advice: {advice.case} -> {advice.strategy}", show_header=False)
    table.add_column("why")
    for line in advice.rationale:
        table.add_row(line)
    console.print(table)
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

    run_demo(limit=args.limit, epochs=args.epochs, quiet=args.quiet, out=args.out)


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


def _data_options(p: argparse.ArgumentParser) -> None:
    """The options every command that reads DATA shares, spelled and explained once."""
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=None, help="embedding cache (default ~/.cache/headstart or $HEADSTART_CACHE)")
    p.add_argument("--text-column", default=None)
    p.add_argument("--label-column", default=None)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result as JSON (implies --quiet)")


def build_parser() -> argparse.ArgumentParser:
    from headstart.style import DEFAULT_CONTENT_LAYER, DEFAULT_STYLE_LAYERS, DEFAULT_STYLE_WEIGHT, DEFAULT_TEMPERATURE, DEFAULT_TV_WEIGHT

    parser = argparse.ArgumentParser(prog="headstart", description="Transfer learning for small labelled datasets.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="train a classifier on DATA by transfer from a pretrained backbone")
    p.add_argument("data", nargs="?", help="image or audio folder (class sub-folders, optional train/val/test), CSV/TSV/JSONL with text and label columns, or a path,label[,split] listing")
    p.add_argument("--resume", default=None, metavar="RUN", help="continue the interrupted run RUN with its own arguments (same as `headstart resume RUN`)")
    p.add_argument("--backbone", default=None, help="efficientnet_lite0 (images) or minilm (text) by default; timm:ARCH, hf:ID_OR_DIR or a run dir")
    p.add_argument("--weights", default=None, help="local weights file for a timm: backbone")
    p.add_argument("--strategy", default="feature-extraction", choices=[*STRATEGY_CHOICES, "auto"], help="auto: measure the data first (see `headstart advise`); contrastive: few-shot text (SetFit)")
    p.add_argument("--out", default=None, help="run directory (default runs/<data>-<strategy>-<time>)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="head learning rate")
    p.add_argument("--body-lr", type=float, default=None, help="learning rate of trainable backbone blocks (default lr/10)")
    p.add_argument("--patience", type=int, default=None, help="epochs without improvement before early stopping (default per strategy)")
    p.add_argument("--monitor", default=None, choices=["val_loss", "val_accuracy"], help="what early stopping and the kept weights follow")
    p.add_argument("--trainable-blocks", type=int, default=None, help="fine-tune: number of top backbone blocks that train")
    p.add_argument("--freeze", type=float, default=None, help="fine-tune: fraction of backbone blocks frozen from the input (default 0.5)")
    p.add_argument("--batchnorm", default=None, choices=["eval", "train"], help="fine-tune/full: BatchNorm of trainable blocks in eval (default: keeps ImageNet statistics) or train mode")
    p.add_argument("--no-head-warmup", action="store_true", help="fine-tune/full/gradual/lora: skip fitting the head on cached features first (plain FT instead of LP-FT)")
    p.add_argument("--layer-decay", type=float, default=None, help="layer-wise lr decay: the block k below the head trains at lr*decay^k (replaces --body-lr)")
    p.add_argument("--block-lrs", default=None, help="per-block rates: LOW:HIGH (geometric, first block to head) or BLOCK=RATE,... (names or globs)")
    p.add_argument("--l2sp", type=float, nargs="?", const=0.01, default=None, help="L2-SP penalty toward the pretrained weights (default weight 0.01)")
    p.add_argument("--bss", type=float, nargs="?", const=0.001, default=None, help="Batch Spectral Shrinkage penalty (default weight 0.001)")
    p.add_argument("--unfreeze-blocks", type=int, default=None, help="gradual: backbone blocks trainable by the last stage (each stage: --epochs, or until --patience epochs without improvement)")
    p.add_argument("--lora-rank", type=int, default=None, help="lora: adapter rank (default 8)")
    p.add_argument("--label-templates", type=int, default=None, help="contrastive: add N 'This sentence is {class}' examples per class (default 0)")
    p.add_argument("--accumulate", type=int, default=None, help="gradient accumulation: batches per optimizer step")
    p.add_argument("--grad-clip", type=float, default=None, help="clip the gradient norm (default 1.0; 0 for none)")
    p.add_argument("--precision", default=None, choices=["fp32", "bf16"], help="bf16: autocast on a GPU that supports it")
    p.add_argument("--torch-compile", action="store_true", help="run the training steps through torch.compile (pays off on a GPU over many steps)")
    p.add_argument("--cut", default=None, help="use the pooled output of this block (name or index)")
    p.add_argument("--hidden", type=int, default=None, help="hidden layer width of the new head")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--augment", default=None, choices=AUGMENT_CHOICES, help="image augmentation (default light when fine-tuning; dihedral adds vertical flips and quarter turns for images with no up or down)")
    p.add_argument("--image-size", type=int, default=None, help="input resolution (of images, or of spectrogram images for audio) instead of the weights' own (saved with the run)")
    p.add_argument("--tta", default=None, choices=["none", "flip", "dihedral"], help="test-time augmentation: predictions averaged over flips, or the 8 symmetries of the square (saved with the run)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="allow writing into an existing run directory")
    p.add_argument("--cache-dir", default=None, help="embedding cache (default ~/.cache/headstart or $HEADSTART_CACHE)")
    p.add_argument("--text-column", default=None)
    p.add_argument("--label-column", default=None)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result as JSON (implies --quiet)")
    p.add_argument("--log-to", default=None, choices=["tensorboard", "mlflow"], help="also log per-epoch metrics and the report there (optional extras)")
    p.add_argument("--log-uri", default=None, help="TensorBoard log dir (default RUN/tensorboard) or MLflow tracking URI (default: MLflow's own)")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("pretrain", help="train a source model from scratch on DATA and save it as a backbone for fit/profile/rank/advise")
    p.add_argument("data", help="source dataset: image folder or CSV/TSV/JSONL, as for fit")
    p.add_argument("--arch", default="resnet18", help="timm architecture (resnet18, resnet10t, test_resnet ...), timm:ARCH, hf:CONFIG_DIR or an embedded name (default resnet18)")
    p.add_argument("--out", default=None, help="run directory, later passed as --backbone (default runs/<data>-pretrain-<arch>-<time>)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of every block")
    p.add_argument("--patience", type=int, default=10, help="epochs without better validation loss before stopping")
    p.add_argument("--image-size", type=int, default=None, help="input resolution (default the architecture's own, usually 224)")
    p.add_argument("--augment", default=None, choices=AUGMENT_CHOICES, help="image augmentation (default light: crops and flips)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="allow writing into an existing run directory")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--text-column", default=None)
    p.add_argument("--label-column", default=None)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result as JSON (implies --quiet)")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("resume", help="continue a fit that Ctrl-C or a crash interrupted, after its last finished epoch")
    p.add_argument("run", help="run directory of the interrupted fit (it holds checkpoint/)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result as JSON (implies --quiet)")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("lr-find", help="learning-rate range test on DATA (before a fit, or on a saved --run): suggested rate and a plot")
    p.add_argument("data")
    p.add_argument("--backbone", default=None, help="efficientnet_lite0 (images) or minilm (text) by default")
    p.add_argument("--run", default=None, help="test the model of this saved run instead of a new one")
    p.add_argument("--trainable-blocks", type=int, default=0, help="0: the head alone on cached features; k: the top k blocks and the head (fine-tune)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--start", type=float, default=1e-7)
    p.add_argument("--end", type=float, default=10.0)
    p.add_argument("--plot", default=None, help="PNG path (default lr-find-<data>.png; 'none' for no plot)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=None)
    _data_options(p)
    p.set_defaults(func=cmd_lr_find)

    p = sub.add_parser("evaluate", help="metrics of a saved run on a dataset")
    p.add_argument("run")
    p.add_argument("data")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--text-column", default=None)
    p.add_argument("--label-column", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="label and probability for images (paths) or texts (strings or files of lines)")
    p.add_argument("run")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("summary", help="blocks, parameter counts, trainable/frozen and BatchNorm mode of a backbone or run")
    p.add_argument("model", help="backbone name or run directory")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("list", help="embedded backbones")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("profile", help="per-block linear-probe accuracy and LogME of a backbone on DATA, with a plot")
    p.add_argument("data", help="image or audio folder, or CSV/TSV/JSONL (train and val splits are measured, test is left out)")
    p.add_argument("--backbone", default=None, help="efficientnet_lite0 (images) or minilm (text) by default")
    p.add_argument("--blocks", default=None, help="comma-separated block names or indices (default: all, or every k-th for deep models)")
    p.add_argument("--every", type=int, default=None, help="profile every k-th block")
    p.add_argument("--limit", type=int, default=None, help="stratified subset of this many examples")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--tolerance", type=float, default=0.01, help="accuracy within which a block is as good as the best (default 0.01 = 1 point)")
    p.add_argument("--plot", default=None, help="PNG path (default profile-<data>-<backbone>.png; 'none' for no plot)")
    p.add_argument("--run", default=None, help="profile this saved run's source backbone and input size, and save the result in RUN for its report")
    p.add_argument("--batch-size", type=int, default=32)
    _data_options(p)
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("rank", help="rank candidate backbones for DATA by a transferability score (one forward pass each)")
    p.add_argument("data")
    p.add_argument("--backbones", default=None, help="comma-separated extra candidates (embedded ones of the modality are always included unless --only)")
    p.add_argument("--only", action="store_true", help="rank only the --backbones named")
    p.add_argument("--score", default="logme", choices=["logme", "hscore", "hscore-shrinkage", "leep", "nce"])
    p.add_argument("--limit", type=int, default=None, help="stratified subset of this many examples")
    p.add_argument("--batch-size", type=int, default=32)
    _data_options(p)
    p.set_defaults(func=cmd_rank)

    p = sub.add_parser("advise", help="place DATA in the four cases (small/large x similar/different) and recommend how to fit it")
    p.add_argument("data")
    p.add_argument("--backbone", default=None, help="efficientnet_lite0 (images) or minilm (text) by default")
    p.add_argument("--limit", type=int, default=400, help="examples profiled (stratified subset; size counts all)")
    p.add_argument("--every", type=int, default=None, help="profile every k-th block")
    _data_options(p)
    p.set_defaults(func=cmd_advise)

    p = sub.add_parser("report", help="(re)build the self-contained HTML report of a run (fit writes it too)")
    p.add_argument("run", help="run directory written by `headstart fit`")
    p.add_argument("--compare", action="append", default=None, metavar="RUN", help="another run on the same data to show side by side (repeatable); scratch/transfer siblings are found without it")
    p.add_argument("--out", default=None, help="where to write the page (default RUN/report.html)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="write a run's model as ONNX or TorchScript, with preprocessing.json beside it")
    p.add_argument("run", help="run directory written by `headstart fit`")
    p.add_argument("--format", default="onnx", choices=["onnx", "torchscript"])
    p.add_argument("--out", default=None, help="output directory (default RUN/export)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="offline demo on the ELPV solar-cell images: transfer vs scratch")
    p.add_argument("--limit", type=int, default=800, help="number of ELPV images used (default 800)")
    p.add_argument("--epochs", type=int, default=6, help="epochs for fine-tune and scratch")
    p.add_argument("--out", default=None, help="keep the three runs (and their reports, transfer vs scratch side by side) in this directory")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("stylize", help="neural style transfer: optimise the pixels of CONTENT to take the style of STYLE (the backbone stays frozen)")
    p.add_argument("content", help="image whose layout is kept")
    p.add_argument("style", help="image whose colours and textures are taken")
    p.add_argument("--out", required=True, help="output image (.png, .jpg or .webp); never overwritten without --overwrite")
    p.add_argument("--backbone", default="efficientnet_lite0", help="convolutional image backbone: efficientnet_lite0 (default, offline), timm:vgg19 ...")
    p.add_argument("--weights", default=None, help="local weights file for a timm: backbone")
    p.add_argument("--size", type=int, default=256, help="longer side of the result in pixels (0: the content image's size)")
    p.add_argument("--style-scale", type=float, default=1.0, help="style image size relative to the result: larger gives larger strokes")
    p.add_argument("--layers", default=None, help=f"style blocks, comma-separated names or globs as for freezing (default on EfficientNet: {','.join(DEFAULT_STYLE_LAYERS)})")
    p.add_argument("--content-layer", default=None, help=f"block whose features keep the content (default on EfficientNet: {DEFAULT_CONTENT_LAYER})")
    p.add_argument("--content-weight", type=float, default=1.0)
    p.add_argument("--style-weight", type=float, default=DEFAULT_STYLE_WEIGHT)
    p.add_argument("--tv-weight", type=float, default=DEFAULT_TV_WEIGHT, help="total-variation smoothing")
    p.add_argument("--transform", default="softmax", choices=["softmax", "none"], help="softmax: SWAG features (Wang et al. 2021); none: Gatys' raw features")
    p.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, help="softmax temperature in units of each block's activation spread")
    p.add_argument("--steps", type=int, default=300, help="optimiser iterations")
    p.add_argument("--optimizer", default="lbfgs", choices=["lbfgs", "adam"])
    p.add_argument("--lr", type=float, default=None, help="step size (default 1 for L-BFGS, 0.05 for Adam)")
    p.add_argument("--parameterization", default="fourier", choices=["fourier", "pixels"], help="optimise decorrelated Fourier coefficients (default) or raw pixels")
    p.add_argument("--init", default="content", choices=["content", "noise"], help="start from the content image or from seeded noise")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_stylize)

    p = sub.add_parser("ui", help="a local web page: choose or upload examples, see the advice, train, try the model, compare runs (extra: headstart[ui])")
    p.add_argument("--allow", action="append", default=None, metavar="DIR", help="a folder the page may read datasets from (repeatable; default the current folder)")
    p.add_argument("--project", default="headstart-project", help="folder for uploaded datasets and runs (default ./headstart-project)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--max-upload-mb", type=int, default=2048, help="largest size an uploaded zip or set of images may unpack to (default 2048)")
    p.add_argument("--open", action="store_true", help="open the page in the default web browser")
    p.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    if getattr(args, "command", None) == "fit":
        if args.resume is not None:
            args.run, args.func = args.resume, cmd_resume
        elif args.data is None:
            print("error: headstart fit needs DATA (or --resume RUN to continue an interrupted run)", file=sys.stderr)
            return 2
        elif args.backbone is None:
            args.backbone = _default_backbone(args.data)
    try:
        args.func(args)
    except KeyboardInterrupt as interrupt:
        print(str(interrupt) or "interrupted", file=sys.stderr)
        return 130
    except _USER_ERRORS as error:
        print(f"error: {error_line(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
