"""``headstart demo``: what transfer buys, offline, in a few minutes on a laptop CPU.

Real data shipped by a package (ELPV solar-cell electroluminescence images, far from ImageNet),
the embedded EfficientNet-Lite0, and three runs side by side: feature extraction, fine-tuning and
the same network trained from scratch with the same epochs. The runs and their reports (transfer
and scratch side by side) are kept in a folder the demo names, so there is something to open.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from headstart.api import Run, fit
from headstart.config import DEMO_EPOCHS, DEMO_IMAGE_SIZE, DEMO_LIMIT, DEMO_OUT
from headstart.data import load_elpv
from headstart.metrics import describe
from headstart.report import write_report
from headstart.rundir import REPORT_NAME, check_new_run_dir

STRATEGIES = ("feature-extraction", "fine-tune", "scratch")


def fine_tune_verdict(run: Run) -> str:
    """Say in words whether the fine-tuned weights were kept, or the head alone (the warm-up) was better (:func:`headstart.outcome.kept_weights`)."""
    kept = run.history.kept()
    return kept["sentence"] if kept is not None else "no epoch finished, so no weights were kept"


def run_demo(
    *, limit: int = DEMO_LIMIT, epochs: int = DEMO_EPOCHS, image_size: int = DEMO_IMAGE_SIZE, quiet: bool = False, out: str | Path = DEMO_OUT, overwrite: bool = False
) -> list[dict[str, object]]:
    """Run the three strategies on ``limit`` ELPV images into ``out``; print and return one row per strategy."""
    console = Console()
    base = Path(out)
    check_new_run_dir(base, overwrite)  # before any work: never over an earlier demo or anything else
    data = load_elpv(task="binary", limit=limit, seed=0)
    counts = data.summary()["counts"]
    console.print(f"[bold]headstart demo[/bold]: ELPV solar cells, defective vs functional; {', '.join(f'{s} {sum(c.values())}' for s, c in counts.items())} images at {image_size} px; runs in {base}")
    rows, verdict = [], ""
    for strategy in STRATEGIES:
        console.print(f"[bold]{strategy}[/bold] ...")
        started = time.perf_counter()
        extra = {} if strategy == "feature-extraction" else {"epochs": epochs}
        run = fit(data, backbone="efficientnet_lite0", strategy=strategy, out=base / strategy, overwrite=overwrite, quiet=quiet, image_size=image_size, **extra)
        test = run.metrics["test"]
        rows.append({"strategy": strategy, "accuracy": test["accuracy"], "macro_f1": test["macro_f1"], "shown": describe(test, "accuracy"), "epochs": len(run.history.epochs), "seconds": time.perf_counter() - started})
        if strategy == "fine-tune":
            verdict = fine_tune_verdict(run)
    for strategy in STRATEGIES[:-1]:  # written before the scratch run existed: now side by side
        write_report(base / strategy)
    table = Table(title=f"transfer vs scratch on ELPV ({sum(counts['test'].values())} test images)")
    for col in ("strategy", "test accuracy (95% CI)", "macro F1", "epochs", "seconds"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for r in rows:
        table.add_row(str(r["strategy"]), str(r["shown"]), f"{r['macro_f1']:.3f}", str(r["epochs"]), f"{r['seconds']:.0f}")
    console.print(table)
    scratch = rows[-1]["accuracy"]
    best = max(rows[:-1], key=lambda r: r["accuracy"])
    console.print(f"best transfer ({best['strategy']}) {best['accuracy']:.3f} vs scratch {scratch:.3f}: {100 * (best['accuracy'] - scratch):+.1f} points")
    console.print(verdict)
    console.print("reports:\n" + "\n".join(f"  {base / s / REPORT_NAME}" for s in STRATEGIES), highlight=False, soft_wrap=True)
    return rows
