"""``headstart ui``: a local web page for people who do not write code - choose examples, see the
advice, train while watching the curves, try the model, compare runs.

Why FastAPI + uvicorn (the ``ui`` extra): the page needs a handful of JSON routes, two file uploads
and one long job at a time, and nothing else. FastAPI (on Starlette) gives routing, request
validation, multipart uploads (python-multipart), ``FileResponse`` and a ``TestClient`` for the
unit tests; uvicorn is its maintained reference server. An ML UI framework (Gradio, Streamlit)
would bring its own page model, a larger dependency tree and, for Gradio, an upload handler and
share links that we would have to audit rather than write; a plain HTML page (one Jinja2 template,
inline vanilla JS, no build step, nothing fetched from a CDN) keeps every request the page makes
visible in this file. The page polls ``/api/job`` once a second: one job, a few numbers per epoch,
no need for Server-Sent Events or websockets.

What the server does on its own:

* **one job at a time** (advice, training or resume) on a background thread (:class:`JobRunner`);
  a second request gets HTTP 409 and a sentence saying what is running. Training is
  :func:`headstart.api.fit` with a :class:`~headstart.training.loop.Callback` that copies each epoch's
  record into the job state (the page draws the curves from it) and is also the cancel point;
* **cancel is Ctrl-C at an epoch boundary**: the callback raises ``KeyboardInterrupt`` after the
  run's :class:`~headstart.training.checkpoint.Checkpoint` saved the epoch, so ``fit`` stops the way it does
  on Ctrl-C and leaves ``RUN/checkpoint/`` (resumable from the page or with ``headstart resume``);
* **safe by default**: it binds to 127.0.0.1 unless told otherwise; every folder the page names is
  resolved (symbolic links too) and refused unless it lies inside a folder given with ``--allow`` or
  the project folder; an uploaded zip is read entry by entry and refused, before anything is
  written, if an entry is absolute, climbs out with ``..``, is a symbolic link, or if the entries
  unpack to more than ``max_unpacked`` bytes (the copy counts bytes again while writing);
* errors reach the page as one line (``{"error": ...}``), never a traceback; unexpected ones are
  logged with their traceback in the terminal that runs ``headstart ui``.

Uploads and runs live in the project folder: ``PROJECT/datasets/<name>/<class>/...`` and
``PROJECT/runs/<name>-<strategy>-<time>/`` (ordinary run directories, as ``headstart fit`` writes).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import math
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

if importlib.util.find_spec("python_multipart") is None and importlib.util.find_spec("multipart") is None:
    raise ImportError('headstart ui needs python-multipart: pip install "headstart[ui]"')
try:
    import uvicorn
    from fastapi import FastAPI, File, Form, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
    from pydantic import BaseModel
except ImportError as missing:
    raise ImportError(f'headstart ui needs {missing.name}: pip install "headstart[ui]"') from None

from headstart.api import HISTORY_NAME, METRICS_NAME, _default_run_dir, fit, predict, resume
from headstart.training.checkpoint import ARGS_NAME, STATE_NAME, checkpoint_dir, read_fit_args
from headstart.cli import _USER_ERRORS, error_line
from headstart.data import FILE_KINDS, IMAGE_EXTENSIONS, TABLE_EXTENSIONS, check_file, load_dataset
from headstart.model import CONFIG_NAME, TransferModel
from headstart.report import REPORT_NAME
from headstart.training.loop import Callback

log = logging.getLogger("headstart.ui")

DEFAULT_PORT = 8765
MAX_UNPACKED = 2 * 1024**3  # bytes an uploaded zip may unpack to (``--max-upload-mb``)
MAX_MEMBERS = 100_000  # entries in one zip
TOP_K = 5  # classes shown per prediction
STRATEGY_HELP = {
    "feature-extraction": "Fastest. The pretrained network stays as it is; only a new last layer learns your classes. Best with few examples.",
    "fine-tune": "The top layers of the network also adapt to your examples. Slower; helps with a few hundred examples per class or more.",
    "full": "Every layer adapts. Slowest; needs many examples.",
    "gradual": "Layers are unfrozen one at a time from the top (ULMFiT).",
    "lora": "Small adapter weights inside a transformer learn; the network itself stays frozen (text models).",
    "contrastive": "A handful of texts per class: the text model first learns from pairs of your examples (SetFit), then a new last layer.",
    "scratch": "No pretrained knowledge at all: a baseline that shows what transfer bought.",
}
ADVICE_KEYS = ("cut", "trainable_blocks", "lr", "body_lr", "epochs", "batchnorm")  # what advise() may set in Advice.fit_kwargs
_NAME = re.compile(r"[^\w.\- ]+")


class Busy(RuntimeError):
    """A job is running; the server does one at a time."""


# --------------------------------------------------------------------------------------------
# Paths, names and archives: nothing the page sends may reach outside the allowed folders
# --------------------------------------------------------------------------------------------


def inside(path: str | Path, allowed: Sequence[Path], *, base: Path | None = None) -> Path:
    """``path`` resolved (``~``, ``..`` and symbolic links), or ``PermissionError`` unless it lies inside one of ``allowed``.

    A relative ``path`` is taken relative to ``base`` (default the first allowed folder).
    """
    given = Path(str(path).strip()).expanduser()
    if not given.is_absolute():
        given = (base or allowed[0]) / given
    resolved = given.resolve()
    if not any(resolved.is_relative_to(root.resolve()) for root in allowed):
        roots = ", ".join(str(r) for r in allowed)
        raise PermissionError(f"{path}: outside the folders this page may read ({roots}); restart with `headstart ui --allow FOLDER` to add one")
    if not resolved.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return resolved


def safe_name(text: str, what: str) -> str:
    """A file or folder name made from user text: no separators, no leading dot, at most 80 characters."""
    name = _NAME.sub("_", Path(str(text).replace("\\", "/")).name).strip(" .")[:80]
    if not name:
        raise ValueError(f"{what} {text!r} is empty once unsafe characters are removed; use letters, digits, '-', '_' or '.'")
    return name


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return (info.external_attr >> 16) & 0o170000 == 0o120000


def check_zip(archive: zipfile.ZipFile, *, label: str, max_unpacked: int = MAX_UNPACKED) -> list[zipfile.ZipInfo]:
    """The entries of ``archive`` worth unpacking, after refusing the whole archive if any entry is unsafe.

    Refused: absolute names (``/x``, ``C:x``), names with a ``..`` part, symbolic links, more than
    :data:`MAX_MEMBERS` entries, or a declared unpacked size above ``max_unpacked`` (zip bombs).
    macOS ``__MACOSX/`` resource forks and hidden files are left out.
    """
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ValueError(f"{label}: {len(infos):,} entries, more than {MAX_MEMBERS:,}; split the archive")
    total = 0
    kept = []
    for info in infos:
        name = info.filename.replace("\\", "/")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
            raise ValueError(f"{label}: entry {info.filename!r} has an absolute path; refused, nothing was unpacked")
        if ".." in parts:
            raise ValueError(f"{label}: entry {info.filename!r} points outside the folder it would be unpacked into ('..'); refused, nothing was unpacked")
        if _is_symlink(info):
            raise ValueError(f"{label}: entry {info.filename!r} is a symbolic link; refused, nothing was unpacked")
        total += info.file_size
        if total > max_unpacked:
            raise ValueError(f"{label}: unpacks to more than {_size(max_unpacked)} (a zip bomb, or a dataset too big for an upload); refused, nothing was unpacked; "
                             "pass the folder instead, or restart with a larger --max-upload-mb")  # fmt: skip
        if info.is_dir() or not parts or parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts):
            continue
        kept.append(info)
    return kept


def extract_zip(archive: zipfile.ZipFile, target: Path, *, label: str, max_unpacked: int = MAX_UNPACKED) -> None:
    """Unpack the entries :func:`check_zip` accepts into ``target``, counting the bytes actually written."""
    entries = check_zip(archive, label=label, max_unpacked=max_unpacked)
    root = target.resolve()
    written = 0
    for info in entries:
        path = (root / info.filename.replace("\\", "/")).resolve()
        if not path.is_relative_to(root):  # check_zip refused this already; a second lock on the same door
            raise ValueError(f"{label}: entry {info.filename!r} escapes the target folder; refused")
        path.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as source, path.open("wb") as sink:
            while chunk := source.read(1 << 20):
                written += len(chunk)
                if written > max_unpacked:
                    raise ValueError(f"{label}: unpacks to more than {_size(max_unpacked)}; refused")
                sink.write(chunk)


def _dataset_root(folder: Path) -> Path:
    """The folder itself, or its only sub-folder when a zip wrapped everything in one (``pets/cats``, ``pets/dogs``)."""
    children = [c for c in folder.iterdir() if not c.name.startswith(".")]
    return children[0] if len(children) == 1 and children[0].is_dir() and any(c.is_dir() for c in children[0].iterdir()) else folder


def _images_in(folder: Path, most: int = 10_000) -> int:
    """Image files directly inside ``folder`` (counting stops at ``most``): tells class folders apart in the folder list."""
    if not folder.is_dir():
        return 0
    found = 0
    for i, child in enumerate(folder.iterdir()):
        found += child.suffix.lower() in IMAGE_EXTENSIONS
        if i >= most:
            break
    return found


def _size(n: int) -> str:
    return f"{n / 1024**3:.1f} GB" if n >= 1024**3 else f"{n / 1024**2:.0f} MB"


# --------------------------------------------------------------------------------------------
# The one background job
# --------------------------------------------------------------------------------------------


def _finite(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities (an empty validation split) become ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class JobRunner:
    """Runs one job (advice, training, resume) at a time on a background thread; :meth:`snapshot` is what the page polls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._state: dict[str, Any] = {"status": "idle", "id": 0}

    def start(self, kind: str, title: str, work: Callable[[JobRunner], dict[str, Any]], **info: Any) -> dict[str, Any]:
        with self._lock:
            if self._state["status"] == "running":
                started = datetime.fromtimestamp(self._state["started"]).strftime("%H:%M:%S")
                raise Busy(f"{self._state['title']} is still running (started {started}); one job at a time: wait for it to finish or cancel it")
            self._cancel.clear()
            self._state = {"id": self._state["id"] + 1, "kind": kind, "title": title, "status": "running", "started": time.time(), "ended": None,
                           "phase": None, "phase_epochs": None, "epochs": [], "message": "", "result": None, "cancel_requested": False, **info}  # fmt: skip
            self._thread = threading.Thread(target=self._run, args=(work,), name=f"headstart-ui-{kind}", daemon=True)
            self._thread.start()
        return self.snapshot()

    def _run(self, work: Callable[[JobRunner], dict[str, Any]]) -> None:
        try:
            self.update(status="done", result=work(self))
        except KeyboardInterrupt:
            epochs = self.snapshot()["epochs"]
            kept = f"after epoch {epochs[-1]['epoch']}" if epochs else "before the first epoch ended"
            self.update(status="cancelled", message=f"Stopped {kept}. The run is kept: resume it from Past runs (or `headstart resume`).")
        except _USER_ERRORS as error:
            self.update(status="failed", message=error_line(error))
        except Exception as error:  # noqa: BLE001 - the page gets one line, the terminal the traceback
            log.exception("job %s failed", self._state.get("title"))
            self.update(status="failed", message=f"unexpected error ({type(error).__name__}: {error_line(error)}); the terminal running `headstart ui` shows the details")
        finally:
            self.update(ended=time.time())

    def update(self, **values: Any) -> None:
        with self._lock:
            self._state.update(values)

    def add_epoch(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._state["epochs"].append(record)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            state = {**self._state, "epochs": list(self._state.get("epochs", []))}
        if state.get("started"):
            state["elapsed"] = (state["ended"] or time.time()) - state["started"]
        return _finite(state)

    def cancel(self) -> dict[str, Any]:
        with self._lock:
            if self._state["status"] != "running":
                raise ValueError("nothing is running, so there is nothing to cancel")
            self._cancel.set()
            self._state["cancel_requested"] = True
        return self.snapshot()

    def check_cancel(self) -> None:
        """Raise ``KeyboardInterrupt`` when the page asked to cancel (called at safe points only)."""
        if self._cancel.is_set():
            raise KeyboardInterrupt("cancelled from the page")

    def running(self) -> bool:
        with self._lock:
            return self._state["status"] == "running"

    def wait(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)


EPOCH_KEYS = ("epoch", "phase", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds")


class LiveProgress(Callback):
    """Copies each epoch's record into the job (the page's curves) and cancels at epoch ends.

    Registered after :func:`fit`'s own :class:`~headstart.training.checkpoint.Checkpoint`, so by the time
    :meth:`on_epoch_end` raises, the epoch is saved: the run stops as on Ctrl-C, resumable.
    """

    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner

    def on_fit_start(self, state: dict[str, Any]) -> None:
        self.runner.check_cancel()
        done = [{k: r.get(k) for k in EPOCH_KEYS} for r in state["history"].epochs]  # a resumed run's earlier epochs
        self.runner.update(phase=state["phase"], phase_epochs=state["settings"].epochs, phase_first=len(done), epochs=done)

    def on_epoch_end(self, state: dict[str, Any]) -> None:
        self.runner.add_epoch({k: state["record"].get(k) for k in EPOCH_KEYS})
        self.runner.check_cancel()


# --------------------------------------------------------------------------------------------
# Runs and datasets as the page shows them
# --------------------------------------------------------------------------------------------


def dataset_info(path: Path) -> dict[str, Any]:
    """The dataset summary the page shows, with the backbones that fit its modality."""
    from headstart.backbones import list_backbones

    dataset = load_dataset(path)
    summary = dataset.summary()
    modality = summary["modality"]
    names = [s.name for s in list_backbones("text" if modality == "text" else "image")]
    default = "minilm" if modality == "text" else "efficientnet_lite0"
    rows = [{"class": c, **{split: counts.get(c, 0) for split, counts in summary["counts"].items()}} for c in dataset.classes]
    return {
        "path": str(path), "name": path.stem, "modality": modality, "classes": dataset.classes, "splits": list(summary["counts"]), "rows": rows,
        "total": sum(sum(c.values()) for c in summary["counts"].values()), "skipped": summary["skipped"], "skipped_reasons": summary["skipped_reasons"],
        "skipped_files": summary["skipped_files"][:10], "notes": summary["notes"], "warnings": summary["warnings"],
        "backbones": names, "backbone": default if default in names else names[0],
    }  # fmt: skip


def run_info(directory: Path) -> dict[str, Any] | None:
    """One row of the runs table: a finished run's metrics, or an interrupted run's progress; ``None`` for anything else."""
    import json

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
        epochs = read(directory / HISTORY_NAME).get("epochs", [])
        return _finite({**row, "status": "finished", "data": Path(config.get("dataset", {}).get("source", "?")).name, "modality": config.get("dataset", {}).get("modality"),
                        "backbone": training.get("backbone"), "strategy": training.get("strategy", {}).get("name"), "split": held_out.get("split"),
                        "accuracy": held_out.get("accuracy"), "balanced_accuracy": held_out.get("balanced_accuracy"), "macro_f1": held_out.get("macro_f1"),
                        "n": held_out.get("n"), "epochs": len(epochs), "seconds": metrics.get("seconds"), "report": (directory / REPORT_NAME).is_file()})  # fmt: skip
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
    epochs: int | None = None
    patience: int | None = None
    settings: dict[str, Any] = {}


class RunChoice(BaseModel):
    run: str


class CompareRequest(BaseModel):
    runs: list[str]


def create_app(*, allowed: Sequence[str | Path] = (".",), project: str | Path = "headstart-project", max_unpacked: int = MAX_UNPACKED) -> FastAPI:
    """The web app: ``allowed`` folders may be read, ``project`` holds uploads (``datasets/``) and runs (``runs/``)."""
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
    models: dict[str, tuple[float, TransferModel]] = {}
    models_lock = threading.Lock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        yield
        if runner.running():  # the server stops (Ctrl-C): stop the job at its next safe point
            runner.cancel()
            print("stopping: the running job ends at its next epoch boundary; a training run stays resumable (headstart resume)", file=sys.stderr)
            runner.wait(timeout=30)

    app = FastAPI(title="headstart", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.runner, app.state.project, app.state.allowed = runner, project, readable

    def refusal(status: int) -> Callable[[Request, Exception], Any]:
        async def handler(request: Request, error: Exception) -> JSONResponse:
            return JSONResponse({"error": error_line(error)}, status_code=status)

        return handler

    app.add_exception_handler(Busy, refusal(409))
    app.add_exception_handler(PermissionError, refusal(403))
    for kind in _USER_ERRORS:
        app.add_exception_handler(kind, refusal(400))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return JSONResponse({"error": f"unexpected error ({type(error).__name__}: {error_line(error)}); the terminal running `headstart ui` shows the details"}, status_code=500)

    def run_dir(name: str, *, finished: bool = True) -> Path:
        directory = runs_dir / safe_name(name, "run")
        if not directory.is_dir():
            raise FileNotFoundError(f"no run named {name!r} in {runs_dir}")
        if finished and not (directory / CONFIG_NAME).is_file():
            raise ValueError(f"run {name!r} has not finished; resume it from Past runs first")
        return directory

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        import jinja2

        from headstart import __version__

        env = jinja2.Environment(loader=jinja2.PackageLoader("headstart", "templates"), autoescape=True)
        return env.get_template("ui.html.j2").render(version=__version__, allowed=[str(r) for r in roots], project=str(project), strategies=STRATEGY_HELP,
                                                     start=str(roots[0]), max_upload=_size(max_unpacked))  # fmt: skip

    @app.get("/api/browse")
    def browse(path: str = "") -> dict[str, Any]:
        folder = inside(path or roots[0], readable)
        if not folder.is_dir():
            raise ValueError(f"{folder}: not a folder")
        entries = []
        for child in sorted(folder.iterdir(), key=lambda p: p.name.lower()):
            if child.name.startswith(".") or not (child.is_dir() or child.suffix.lower() in TABLE_EXTENSIONS):
                continue
            try:
                target = inside(child, readable)
            except (PermissionError, FileNotFoundError):
                continue  # a link out of the allowed folders is not offered
            entries.append({"name": child.name, "path": str(target), "kind": "folder" if target.is_dir() else "table", "images": _images_in(target)})
        images = _images_in(folder)
        parent = folder.parent
        up = str(parent) if parent != folder and any(parent.is_relative_to(r) for r in readable) else None
        return {"path": str(folder), "parent": up, "entries": entries[:500], "images": images, "roots": [str(r) for r in readable]}

    @app.post("/api/dataset")
    def choose(choice: FolderChoice) -> dict[str, Any]:
        return dataset_info(inside(choice.path, readable))

    @app.post("/api/upload/zip")
    def upload_zip(archive: UploadFile = File(...), name: str = Form("")) -> dict[str, Any]:  # noqa: B008 - FastAPI's declaration style
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

    @app.post("/api/upload/images")
    def upload_images(dataset: str = Form(...), label: str = Form(...), files: list[UploadFile] = File(...)) -> dict[str, Any]:  # noqa: B008
        folder = datasets_dir / safe_name(dataset, "dataset name") / safe_name(label, "class name")
        folder.mkdir(parents=True, exist_ok=True)
        kinds = {ext: kind for kind, (extensions, _) in FILE_KINDS.items() for ext in extensions}
        saved, refused, written = 0, [], 0
        for upload in files:
            name = safe_name(upload.filename or "image", "file name")
            kind = kinds.get(Path(name).suffix.lower())
            if kind is None:
                refused.append(f"{name} (not an image or audio file)")
                continue
            path = folder / name
            for n in range(1, 10_000):
                if not path.exists():
                    break
                path = folder / f"{Path(name).stem}-{n}{Path(name).suffix}"
            with path.open("wb") as sink:
                while chunk := upload.file.read(1 << 20):
                    written += len(chunk)
                    if written > max_unpacked:
                        sink.close()
                        path.unlink()
                        raise ValueError(f"upload larger than {_size(max_unpacked)}; pass the folder instead")
                    sink.write(chunk)
            problem = check_file(path, kind)
            if problem:
                path.unlink()
                refused.append(f"{name} ({problem})")
            else:
                saved += 1
        root = folder.parent
        counts = {c.name: sum(1 for f in c.iterdir() if f.is_file()) for c in sorted(root.iterdir()) if c.is_dir()}
        return {"path": str(root), "dataset": root.name, "class": folder.name, "saved": saved, "refused": refused, "classes": counts}

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
        if request.strategy not in STRATEGY_HELP:
            raise ValueError(f"unknown strategy {request.strategy!r}; choose one of {list(STRATEGY_HELP)}")
        unknown = sorted(set(request.settings) - set(ADVICE_KEYS))
        if unknown:
            raise ValueError(f"settings {unknown} are not ones the advisor sets ({list(ADVICE_KEYS)})")
        settings = {k: v for k, v in request.settings.items() if v is not None}
        if request.epochs is not None:
            settings["epochs"] = request.epochs
        out = project / _default_run_dir(path, request.strategy + (f"-cut-{safe_name(str(settings['cut']), 'cut')}" if settings.get("cut") else ""))  # a cut network shows in the name

        def work(job: JobRunner) -> dict[str, Any]:
            fit(path, backbone=request.backbone, strategy=request.strategy, out=out, patience="default" if request.patience is None else request.patience,
                quiet=True, callbacks=[LiveProgress(job)], **settings)  # fmt: skip
            return run_info(out) or {}

        return runner.start("training", f"Training {request.strategy} on {path.name}", work, run=out.name, backbone=request.backbone, strategy=request.strategy)

    @app.post("/api/resume")
    def resume_job(choice: RunChoice) -> dict[str, Any]:
        directory = run_dir(choice.run, finished=False)
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
        found = [run_info(d) for d in runs_dir.iterdir() if d.is_dir() and not d.name.startswith(".")]
        current = runner.snapshot()
        rows = sorted((r for r in found if r is not None), key=lambda r: r["modified"], reverse=True)
        for row in rows:
            if current["status"] == "running" and current.get("run") == row["name"]:
                row["status"] = "training"
        return rows

    @app.get("/runs/{name}/report.html")
    def report(name: str) -> FileResponse:
        path = run_dir(name) / REPORT_NAME
        if not path.is_file():
            raise FileNotFoundError(f"run {name!r} has no report; rebuild it with `headstart report {path.parent}`")
        return FileResponse(path, media_type="text/html")

    @app.post("/api/compare")
    def compare(request: CompareRequest) -> dict[str, Any]:
        from headstart.report import write_report

        if len(request.runs) < 2:
            raise ValueError("tick at least two finished runs to compare")
        first, *others = (run_dir(name) for name in request.runs)
        write_report(first, compare=others, out=project / "compare.html")
        return {"url": "/compare.html"}

    @app.get("/compare.html")
    def compared() -> FileResponse:
        path = project / "compare.html"
        if not path.is_file():
            raise FileNotFoundError("no comparison yet: tick two runs in Past runs and press Compare")
        return FileResponse(path, media_type="text/html")

    def load_model(directory: Path) -> TransferModel:
        stamp = (directory / CONFIG_NAME).stat().st_mtime
        with models_lock:
            cached = models.get(str(directory))
            if cached is None or cached[0] != stamp:
                models.clear()  # one model in memory at a time
                models[str(directory)] = cached = (stamp, TransferModel.from_pretrained(directory))
            return cached[1]

    @app.post("/api/predict")
    def predict_items(run: str = Form(...), text: str = Form(""), files: list[UploadFile] = File(default=[])) -> dict[str, Any]:  # noqa: B008
        model = load_model(run_dir(run))
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
        for name, result in zip(names, results):
            top = sorted(result.probabilities.items(), key=lambda kv: kv[1], reverse=True)[:TOP_K]
            rows.append({"item": name, "label": result.label, "probability": result.probability, "top": [{"class": c, "probability": p} for c, p in top]})
        return {"run": run, "modality": model.modality, "results": rows}

    return app


# --------------------------------------------------------------------------------------------
# Serving
# --------------------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_for(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(
    *,
    allowed: Sequence[str | Path] = (".",),
    project: str | Path = "headstart-project",
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    max_unpacked: int = MAX_UNPACKED,
    open_browser: bool = False,
) -> None:
    """Start the web app and block until Ctrl-C (see :func:`create_app`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:  # a clear line instead of uvicorn's log when the port is taken
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise OSError(f"cannot listen on {host}:{port} ({error.strerror}); pass another --port") from None
    app = create_app(allowed=allowed, project=project, max_unpacked=max_unpacked)
    if not is_loopback(host):
        print(f"warning: --host {host} lets every machine that can reach this one use the page (read the allowed folders, upload, train); "
              "there is no login. Use it only on a network you trust.", file=sys.stderr)  # fmt: skip
    url = url_for(host, port)
    print(f"headstart ui: open {url} in a web browser (Ctrl-C stops it)\n  reads: {', '.join(str(r) for r in app.state.allowed)}\n  keeps uploads and runs in: {app.state.project}")
    if open_browser:
        import webbrowser

        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    uvicorn.run(app, host=host, port=port, log_level="warning")
