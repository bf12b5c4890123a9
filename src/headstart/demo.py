"""``headstart demo``: what transfer buys, offline, in a few minutes on a laptop CPU.

Real data shipped by a package (ELPV solar-cell electroluminescence images, far from ImageNet),
the embedded EfficientNet-Lite0, and three runs side by side: feature extraction, fine-tuning and
the same network trained from scratch with the same epochs.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from headstart.api import fit
from headstart.data import load_elpv
from headstart.report import write_report
from headstart.rundir import REPORT_NAME


def run_demo(*, limit: int = 800, epochs: int = 6, quiet: bool = False, out: str | Path | None = None) -> list[dict[str, object]]:
    """Run the three strategies on ``limit`` ELPV images; print and return one row per strategy."""
    console = Console()
    data = load_elpv(task="binary", limit=limit, seed=0)
    counts = data.summary()["counts"]
    console.print(f"[bold]headstart demo[/bold]: ELPV solar cells, defective vs functional; {', '.join(f'{s} {sum(c.values())}' for s, c in counts.items())} images")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(out) if out is not None else Path(tmp)
        for strategy, extra in (("feature-extraction", {}), ("fine-tune", {"epochs": epochs}), ("scratch", {"epochs": epochs})):
            console.print(f"[bold]{strategy}[/bold] ...")
            started = time.perf_counter()
            run = fit(data, backbone="efficientnet_lite0", strategy=strategy, out=base / strategy, overwrite=True, quiet=quiet, **extra)
            test = run.metrics["test"]
            rows.append({"strategy": strategy, "accuracy": test["accuracy"], "macro_f1": test["macro_f1"], "epochs": len(run.history.epochs), "seconds": time.perf_counter() - started})
        for strategy in ("feature-extraction", "fine-tune"):  # written before the scratch run existed: now side by side
            write_report(base / strategy)
        if out is not None:
            console.print(f"reports: {', '.join(str(base / s / REPORT_NAME) for s in ('feature-extraction', 'fine-tune', 'scratch'))}")
    table = Table(title=f"transfer vs scratch on ELPV ({counts['test'] and sum(counts['test'].values())} test images)")
    for col in ("strategy", "test accuracy", "macro F1", "epochs", "seconds"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for r in rows:
        table.add_row(str(r["strategy"]), f"{r['accuracy']:.3f}", f"{r['macro_f1']:.3f}", str(r["epochs"]), f"{r['seconds']:.0f}")
    console.print(table)
    scratch = rows[-1]["accuracy"]
    best = max(rows[:-1], key=lambda r: r["accuracy"])
    console.print(f"best transfer ({best['strategy']}) {best['accuracy']:.3f} vs scratch {scratch:.3f}: {100 * (best['accuracy'] - scratch):+.1f} points")
    return rows
