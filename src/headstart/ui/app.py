"""The web app: its routes, the request bodies they accept, and how runs and datasets look on the page.

Each route is a few lines inside :func:`create_app` (which holds the allowed folders and the one
:class:`~headstart.ui.jobs.JobRunner`); the longer bodies are the module-level helpers below it.
Errors become one line of JSON (``{"error": ...}``): user errors 400, a folder outside the allowed
ones 403, a second job 409, anything else 500 with the traceback in the terminal.

Why this module is long: every route closes over the app's one state (allowed folders, project, job runner), so they stay in one create_app.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel

from headstart.api import fit, resume
from headstart.config import ADVICE_KEYS, STRATEGY_HELP, FitConfig
from headstart.data import check_file, load_dataset
from headstart.errors import USER_ERRORS, error_line, is_user_error
from headstart.inference import predict
from headstart.metrics import MIN_EXAMPLES, span, too_few
from headstart.model import TransferModel
from headstart.outcome import kept_weights, phase_counts
from headstart.report.targets import COMPARED, EPOCH_SCORE, SCORES, task_of
from headstart.rundir import ARGS_NAME, CONFIG_NAME, HISTORY_NAME, METRICS_NAME, REPORT_NAME, STATE_NAME, default_run_dir
from headstart.training.checkpoint import checkpoint_dir, read_fit_args
from headstart.ui.jobs import Busy, JobRunner, LiveProgress, _finite
from headstart.ui.security import LOOPBACK_NAMES, Guard, new_token
from headstart.ui.uploads import MAX_UNPACKED, _dataset_root, _size, browse_folder, extract_zip, inside, safe_name, save_examples

log = logging.getLogger("headstart.ui")

TOP_K = 5  # classes shown per prediction


# --------------------------------------------------------------------------------------------
# Runs and datasets as the page shows them
# --------------------------------------------------------------------------------------------


def dataset_info(path: Path) -> dict[str, Any]:
    """The dataset summary the page shows, with the backbones that fit its modality."""
    from headstart.backbones import list_backbones

    dataset = load_dataset(path)
    summary = dataset.summary()
    modality = summary["modality"]
    names = [s.name for s in list_backbones("text" if modality == "text" else "image", installed=True)]
    default = "minilm" if modality == "text" else "efficientnet_lite0"
    rows = [{"class": c, **{split: counts.get(c, 0) for split, counts in summary["counts"].items()}} for c in dataset.classes]
    return {
        "path": str(path), "name": path.stem, "modality": modality, "classes": dataset.classes, "task": summary.get("task", "classification"), "target": summary.get("target"), "splits": list(summary["counts"]), "rows": rows,
        "total": sum(sum(c.values()) for c in summary["counts"].values()), "skipped": summary["skipped"], "skipped_reasons": summary["skipped_reasons"],
        "skipped_files": summary["skipped_files"][:10], "notes": summary["notes"], "warnings": summary["warnings"],
        "backbones": names, "backbone": default if default in names else names[0],
    }  # fmt: skip


def task_scores(held_out: dict[str, Any]) -> dict[str, Any]:
    """The run's task and its held-out scores as the page shows them (:mod:`headstart.report.targets`): each with its
    label, whether it is a percentage and its interval; ``score``: the one runs are compared on (accuracy, R², micro F1)."""
    task = task_of(held_out)
    key, label = COMPARED[task]
    scores = [{"key": k, "label": name, "value": held_out.get(k), "percent": percent, "interval": span(held_out, k, percent=percent) if held_out.get(k) is not None else ""}
              for k, name, percent in SCORES[task]] if held_out else []  # fmt: skip
    return {"task": task, "scores": scores, "score": held_out.get(key), "score_label": label, "score_percent": key == "accuracy", "epoch_score": EPOCH_SCORE[task]}


def form_option(name: str) -> dict[str, Any]:
    """A fit option as the training form offers it: its default, help and choices, read from :class:`~headstart.config.FitConfig`."""
    found = next(f for f in fields(FitConfig) if f.name == name)
    flag = found.metadata["cli"]
    return {"default": found.default, "help": found.metadata["help"], "choices": list(flag.choices or ()) if flag else []}


def run_info(directory: Path) -> dict[str, Any] | None:
    """One row of the runs table: a finished run's metrics, or an interrupted run's progress; ``None`` for anything else."""
    def read(path: Path) -> dict[str, Any]:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    row: dict[str, Any] = {"name": directory.name, "modified": directory.stat().st_mtime}
    if (directory / CONFIG_NAME).is_file() and (directory / METRICS_NAME).is_file():
        config, metrics = read(directory / CONFIG_NAME), read(directory / METRICS_NAME)
        training = config.get("training", {})
        held_out = metrics.get("test") or metrics.get("val") or {}
        history = read(directory / HISTORY_NAME)
        epochs = history.get("epochs", [])
        return _finite({**row, **task_scores(held_out), "status": "finished", "data": Path(config.get("dataset", {}).get("source", "?")).name, "modality": config.get("dataset", {}).get("modality"),
                        "backbone": training.get("backbone"), "strategy": training.get("strategy", {}).get("name"), "split": held_out.get("split"),
                        "accuracy": held_out.get("accuracy"), "balanced_accuracy": held_out.get("balanced_accuracy"), "macro_f1": held_out.get("macro_f1"),
                        "n": held_out.get("n"), "epochs": len(epochs), "seconds": metrics.get("seconds"), "report": (directory / REPORT_NAME).is_file(),
                        "phases": phase_counts(epochs), "kept": kept_weights(epochs, history.get("kept_epoch")),
                        **({"accuracy_interval": span(held_out, "accuracy"), "too_few": too_few(held_out), "min_examples": MIN_EXAMPLES} if held_out else {})})  # fmt: skip
    if (checkpoint_dir(directory) / ARGS_NAME).is_file():
        arguments = read_fit_args(directory)
        epochs = read(checkpoint_dir(directory) / STATE_NAME).get("history", [])
        return {**row, "status": "stopped", "data": Path(str(arguments.get("data") or "?")).name, "backbone": arguments.get("backbone"),
                "strategy": arguments.get("strategy"), "epochs": len(epochs)}  # fmt: skip
    return None


# --------------------------------------------------------------------------------------------
# The application
# --------------------------------------------------------------------------------------------


class FolderChoice(BaseModel):
    path: str


class AdviceRequest(BaseModel):
    path: str
    backbone: str


class TrainRequest(BaseModel):
    path: str
    backbone: str
    strategy: str = "feature-extraction"
    task: str = "auto"
    epochs: int | None = None
    patience: int | None = None
    settings: dict[str, Any] = {}


class RunChoice(BaseModel):
    run: str


class CompareRequest(BaseModel):
    runs: list[str]


def create_app(*, allowed: Sequence[str | Path] = (".",), project: str | Path = "headstart-project", max_unpacked: int = MAX_UNPACKED,
               hosts: Sequence[str] = LOOPBACK_NAMES, token: str | None = None) -> FastAPI:  # fmt: skip
    """The web app: ``allowed`` folders may be read, ``project`` holds uploads (``datasets/``) and runs (``runs/``); only ``hosts`` are
    answered (default the loopback names, any port) and a POST needs ``token`` (default random; app.state.token): :mod:`headstart.ui.security`."""
    project = Path(project).expanduser().resolve()
    for sub in ("datasets", "runs"):
        (project / sub).mkdir(parents=True, exist_ok=True)
    roots = [Path(a).expanduser().resolve() for a in allowed]
    missing = [str(r) for r in roots if not r.is_dir()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: --allow names no folder")
    readable = [*roots, project]
    runs_dir, datasets_dir = project / "runs", project / "datasets"
    runner = JobRunner()
    models = _ModelCache()

    app = FastAPI(title="headstart", docs_url=None, redoc_url=None, openapi_url=None, lifespan=_lifespan)
    app.state.runner, app.state.project, app.state.allowed, app.state.token = runner, project, readable, token or new_token()
    app.add_middleware(Guard, hosts=hosts, token=app.state.token)
    app.add_exception_handler(Busy, _refusal(409))
    for kind in USER_ERRORS:
        app.add_exception_handler(kind, _refusal(400))
    app.add_exception_handler(PermissionError, _refusal(403))  # after the loop: PermissionError is a user error too
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Exception, _unexpected)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return _page(roots, project, max_unpacked, app.state.token)

    @app.get("/api/browse")
    def browse(path: str = "") -> dict[str, Any]:
        return browse_folder(inside(path or roots[0], readable), readable)

    @app.post("/api/dataset")
    def choose(choice: FolderChoice) -> dict[str, Any]:
        return dataset_info(inside(choice.path, readable))

    @app.post("/api/upload/zip")
    def upload_zip(archive: UploadFile = File(...), name: str = Form("")) -> dict[str, Any]:  # noqa: B008 - FastAPI's declaration style
        return _unpack_upload(archive, name, datasets_dir, max_unpacked)

    @app.post("/api/upload/images")
    def upload_images(dataset: str = Form(...), label: str = Form(...), files: list[UploadFile] = File(...)) -> dict[str, Any]:  # noqa: B008
        folder = datasets_dir / safe_name(dataset, "dataset name") / safe_name(label, "class name")
        return save_examples(folder, files, max_unpacked)

    @app.post("/api/advise")
    def advise_job(request: AdviceRequest) -> dict[str, Any]:
        path = inside(request.path, readable)

        def work(job: JobRunner) -> dict[str, Any]:
            from headstart.analysis.advisor import advise

            advice = advise(path, backbone=request.backbone)
            return _finite({**advice.to_dict(), "backbone": request.backbone, "path": str(path)})

        return runner.start("advice", f"Measuring {path.name} with {request.backbone}", work)

    @app.post("/api/train")
    def train_job(request: TrainRequest) -> dict[str, Any]:
        path = inside(request.path, readable)
        settings = _fit_settings(request)
        out = project / default_run_dir(path, request.strategy + (f"-cut-{safe_name(str(settings['cut']), 'cut')}" if settings.get("cut") else ""))  # a cut network shows in the name

        def work(job: JobRunner) -> dict[str, Any]:
            fit(path, backbone=request.backbone, strategy=request.strategy, out=out, patience="default" if request.patience is None else request.patience,
                quiet=True, callbacks=[LiveProgress(job)], **settings)  # fmt: skip
            return run_info(out) or {}

        return runner.start("training", f"Training {request.strategy} on {path.name}", work, run=out.name, backbone=request.backbone, strategy=request.strategy)

    @app.post("/api/resume")
    def resume_job(choice: RunChoice) -> dict[str, Any]:
        directory = _run_dir(runs_dir, choice.run, finished=False)
        read_fit_args(directory)  # a clear error when there is nothing to resume

        def work(job: JobRunner) -> dict[str, Any]:
            resume(directory, quiet=True, callbacks=[LiveProgress(job)])
            return run_info(directory) or {}

        return runner.start("training", f"Resuming {directory.name}", work, run=directory.name)

    @app.post("/api/cancel")
    def cancel() -> dict[str, Any]:
        return runner.cancel()

    @app.get("/api/job")
    def job() -> dict[str, Any]:
        return runner.snapshot()

    @app.get("/api/runs")
    def runs() -> list[dict[str, Any]]:
        return _runs_table(runs_dir, runner.snapshot())

    @app.get("/runs/{name}/report.html")
    def report(name: str) -> FileResponse:
        path = _run_dir(runs_dir, name) / REPORT_NAME
        if not path.is_file():
            raise FileNotFoundError(f"run {name!r} has no report; rebuild it with `headstart report {path.parent}`")
        return FileResponse(path, media_type="text/html")

    @app.post("/api/compare")
    def compare(request: CompareRequest) -> dict[str, Any]:
        from headstart.report import write_report

        if len(request.runs) < 2:
            raise ValueError("tick at least two finished runs to compare")
        first, *others = (_run_dir(runs_dir, name) for name in request.runs)
        write_report(first, compare=others, out=project / "compare.html")
        return {"url": "/compare.html"}

    @app.get("/compare.html")
    def compared() -> FileResponse:
        path = project / "compare.html"
        if not path.is_file():
            raise FileNotFoundError("no comparison yet: tick two runs in Past runs and press Compare")
        return FileResponse(path, media_type="text/html")

    @app.post("/api/predict")
    def predict_items(run: str = Form(...), text: str = Form(""), files: list[UploadFile] = File(default=[])) -> dict[str, Any]:  # noqa: B008
        model = models.load(_run_dir(runs_dir, run))
        return {"run": run, "modality": model.modality, "results": _predictions(model, text, files)}

    return app


# --------------------------------------------------------------------------------------------
# What the routes do
# --------------------------------------------------------------------------------------------


@asynccontextmanager
async def _lifespan(app: FastAPI) -> Any:
    yield
    runner: JobRunner = app.state.runner
    if runner.running():  # the server stops (Ctrl-C): stop the job at its next safe point
        runner.cancel()
        print("stopping: the running job ends at its next epoch boundary; a training run stays resumable (headstart resume)", file=sys.stderr)
        runner.wait(timeout=30)


def _refusal(status: int) -> Callable[[Request, Exception], Any]:
    """An exception handler that answers ``status`` with the error's one line."""

    async def handler(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"error": error_line(error)}, status_code=status)

    return handler


async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0] if error.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=400)


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    if is_user_error(error):  # e.g. a full disk: the user's to fix, one line
        return JSONResponse({"error": error_line(error)}, status_code=400)
    log.error("%s %s failed", request.method, request.url.path, exc_info=error)
    return JSONResponse({"error": f"unexpected error ({type(error).__name__}: {error_line(error)}); the terminal running `headstart ui` shows the details"}, status_code=500)


def _page(roots: list[Path], project: Path, max_unpacked: int, token: str) -> str:
    """The one HTML page (a Jinja2 template with inline JS)."""
    import jinja2

    from headstart import __version__

    env = jinja2.Environment(loader=jinja2.PackageLoader("headstart", "templates"), autoescape=True)
    return env.get_template("ui.html.j2").render(version=__version__, allowed=[str(r) for r in roots], project=str(project), strategies=STRATEGY_HELP,
                                                 task=form_option("task"), epoch_scores=EPOCH_SCORE, start=str(roots[0]), max_upload=_size(max_unpacked), token=token)  # fmt: skip


def _unpack_upload(archive: UploadFile, name: str, datasets_dir: Path, max_unpacked: int) -> dict[str, Any]:
    """Unpack an uploaded zip into ``datasets_dir/name`` (via a staging folder, so a refused zip leaves nothing)."""
    label = safe_name(archive.filename or "upload.zip", "archive")
    target = datasets_dir / safe_name(name or Path(label).stem, "dataset name")
    if target.exists():
        raise FileExistsError(f"a dataset named {target.name!r} already exists in {datasets_dir}; choose another name")
    staging = Path(tempfile.mkdtemp(prefix=".upload-", dir=datasets_dir))
    try:
        try:
            with zipfile.ZipFile(archive.file) as opened:
                extract_zip(opened, staging, label=label, max_unpacked=max_unpacked)
        except zipfile.BadZipFile:
            raise ValueError(f"{label}: not a zip archive; make one with your system's 'Compress' menu") from None
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    try:
        return dataset_info(_dataset_root(target))
    except Exception:
        shutil.rmtree(target, ignore_errors=True)  # unusable: do not keep it under a name the user will want again
        raise


def _fit_settings(request: TrainRequest) -> dict[str, Any]:
    """The keyword arguments ``fit`` gets from the page: the advisor's settings (only those) and the epochs."""
    if request.strategy not in STRATEGY_HELP:
        raise ValueError(f"unknown strategy {request.strategy!r}; choose one of {list(STRATEGY_HELP)}")
    unknown = sorted(set(request.settings) - set(ADVICE_KEYS))
    if unknown:
        raise ValueError(f"settings {unknown} are not ones the advisor sets ({list(ADVICE_KEYS)})")
    settings = {k: v for k, v in request.settings.items() if v is not None}
    tasks = form_option("task")["choices"]
    if request.task not in tasks:
        raise ValueError(f"unknown task {request.task!r}; choose one of {tasks}")
    settings["task"] = request.task
    if request.epochs is not None:
        settings["epochs"] = request.epochs
    return settings


def _run_dir(runs_dir: Path, name: str, *, finished: bool = True) -> Path:
    """The run called ``name``; with ``finished``, refused unless training ended (it has a config)."""
    directory = runs_dir / safe_name(name, "run")
    if not directory.is_dir():
        raise FileNotFoundError(f"no run named {name!r} in {runs_dir}")
    if finished and not (directory / CONFIG_NAME).is_file():
        raise ValueError(f"run {name!r} has not finished; resume it from Past runs first")
    return directory


def _runs_table(runs_dir: Path, current: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run, newest first; the one the running job trains shows as ``training``."""
    found = [run_info(d) for d in runs_dir.iterdir() if d.is_dir() and not d.name.startswith(".")]
    rows = sorted((r for r in found if r is not None), key=lambda r: r["modified"], reverse=True)
    for row in rows:
        if current["status"] == "running" and current.get("run") == row["name"]:
            row["status"] = "training"
    return rows


class _ModelCache:
    """One trained model in memory at a time, reloaded when its run's config changes."""

    def __init__(self) -> None:
        self._models: dict[str, tuple[float, TransferModel]] = {}
        self._lock = threading.Lock()

    def load(self, directory: Path) -> TransferModel:
        stamp = (directory / CONFIG_NAME).stat().st_mtime
        with self._lock:
            cached = self._models.get(str(directory))
            if cached is None or cached[0] != stamp:
                self._models.clear()  # one model in memory at a time
                self._models[str(directory)] = cached = (stamp, TransferModel.from_pretrained(directory))
            return cached[1]


def _predictions(model: TransferModel, text: str, files: list[UploadFile]) -> list[dict[str, Any]]:
    """The model's top classes for each pasted text (one per line) or uploaded file."""
    with tempfile.TemporaryDirectory(prefix="headstart-ui-") as tmp:
        if model.modality == "text":
            items: list[Any] = [line.strip() for line in text.splitlines() if line.strip()]
            if not items:
                raise ValueError("paste one or more texts (one per line) to classify")
            names = [t[:200] for t in items]
        else:
            if not files:
                raise ValueError(f"choose one or more {model.modality} files to classify")
            items, names = [], []
            for i, upload in enumerate(files):
                name = safe_name(upload.filename or f"file{i}", "file name")
                path = Path(tmp) / f"{i}-{name}"
                path.write_bytes(upload.file.read())
                problem = check_file(path, model.modality)
                if problem:
                    raise ValueError(f"{name}: {problem}; choose a {model.modality} file")
                items.append(path)
                names.append(name)
        results = predict(model, items)
    rows = []
    for name, result in zip(names, results):  # regression: the value alone (no probabilities); multilabel: the chosen labels, each label's probability
        top = sorted(result.probabilities.items(), key=lambda kv: kv[1], reverse=True)[:TOP_K]
        rows.append({"item": name, "label": result.label, "probability": result.probability, "top": [{"class": c, "probability": p} for c, p in top]})
    return rows
