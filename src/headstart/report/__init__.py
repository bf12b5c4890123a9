"""One self-contained HTML page per run: the questions a person wants to *see* answered.

Did it overfit, which classes are confused, which examples failed, what was frozen, what did
transfer buy over scratch, where do the features stop being general. :func:`write_report` reads
only what :func:`headstart.fit` saved in the run directory (so ``headstart report RUN`` rebuilds
the same page later) and writes ``report.html`` beside it: plots are PNGs embedded as data URIs,
the CSS is inline, nothing is fetched, so the file opens offline and can be mailed as is.

Sections appear when the run holds their data:

* dataset summary, strategy and settings, frozen/trainable blocks, training curves with phase
  boundaries and the overfitting flag, confusion matrix and per-class precision/recall/F1, the
  worst mistakes (``predictions.json``) - every run written by ``fit``; a regression run shows
  MAE/RMSE/R² with intervals, predicted against true and its largest errors instead, a multi-label
  run micro/macro F1, mAP, subset accuracy, a per-label table and the examples with wrong labels
  (:mod:`~headstart.report.targets`);
* most-confused class pairs, top losses (with Grad-CAM heat maps for image runs), precision-recall
  and ROC curves (two-class runs) and the projection of the test features - from ``predictions.json``
  and ``interpretation.json``, which ``fit`` computes with the model (:mod:`~headstart.report.interpret`);
* the advisor's rationale - runs fitted with ``strategy="auto"``;
* the layer-wise profile - those runs, or any run given ``headstart profile DATA --run RUN``
  (``profile.json``);
* the learning-rate finder plot - when the run directory holds ``lr_find.json``
  (``{"lrs": [...], "losses": [...], "suggestion": lr}``);
* transfer vs scratch - when a run in ``compare`` (or a sibling directory fitted on the same
  data, as ``headstart demo --out DIR`` writes them) was trained from scratch and this one by
  transfer, or the other way round.

The package: :mod:`~headstart.report.html` reads a run (:class:`SavedRun`) and builds the page's
sections (the interpretation ones in :mod:`~headstart.report.insights`), :mod:`~headstart.report.figures` draws its plots, :mod:`~headstart.report.tracking` sends a
run to TensorBoard or MLflow. The run directory's file names live in :mod:`headstart.rundir`.
"""

from __future__ import annotations

from headstart.report.figures import drawable
from headstart.report.html import NAV, render_report, write_report
from headstart.rundir import SavedRun

__all__ = ["NAV", "SavedRun", "drawable", "render_report", "write_report"]
