"""``headstart ui``: a local web page for people who do not write code - choose examples, see the
advice, train while watching the curves, try the model, compare runs.

Why FastAPI + uvicorn (the ``ui`` extra): the page needs a handful of JSON routes, two file uploads
and one long job at a time, and nothing else. FastAPI (on Starlette) gives routing, request
validation, multipart uploads (python-multipart), ``FileResponse`` and a ``TestClient`` for the
unit tests; uvicorn is its maintained reference server. An ML UI framework (Gradio, Streamlit)
would bring its own page model, a larger dependency tree and, for Gradio, an upload handler and
share links that we would have to audit rather than write; a plain HTML page (one Jinja2 template,
inline vanilla JS, no build step, nothing fetched from a CDN) keeps every request the page makes
visible in ``headstart/ui/``. The page polls ``/api/job`` once a second: one job, a few numbers per epoch,
no need for Server-Sent Events or websockets.

What the server does on its own:

* **one job at a time** (advice, training or resume) on a background thread (:class:`~headstart.ui.jobs.JobRunner`);
  a second request gets HTTP 409 and a sentence saying what is running. Training is
  :func:`headstart.api.fit` with a :class:`~headstart.training.callbacks.Callback` that copies each epoch's
  record into the job state (the page draws the curves from it) and is also the cancel point;
* **cancel is Ctrl-C at an epoch boundary**: the callback raises ``KeyboardInterrupt`` after the
  run's :class:`~headstart.training.checkpoint.Checkpoint` saved the epoch, so ``fit`` stops the way it does
  on Ctrl-C and leaves ``RUN/checkpoint/`` (resumable from the page or with ``headstart resume``);
* **safe by default**: it binds to 127.0.0.1 unless told otherwise; every folder the page names is
  resolved (symbolic links too) and refused unless it lies inside a folder given with ``--allow`` or
  the project folder; an uploaded zip is read entry by entry and refused, before anything is
  written, if an entry is absolute, climbs out with ``..``, is a symbolic link, or if the entries
  unpack to more than ``max_unpacked`` bytes (the copy counts bytes again while writing);
* **other web pages in the browser are refused** (:mod:`~headstart.ui.security`): only requests
  whose Host is an address the server is served under are answered (against DNS rebinding), and
  every POST needs the per-session token written into the served page, with no foreign ``Origin``
  or ``Sec-Fetch-Site: cross-site`` (against cross-site uploads, training, predictions, cancel);
  checked before the body is read;
* errors reach the page as one line (``{"error": ...}``), never a traceback; unexpected ones are
  logged with their traceback in the terminal that runs ``headstart ui``.

Uploads and runs live in the project folder: ``PROJECT/datasets/<name>/<class>/...`` and
``PROJECT/runs/<name>-<strategy>-<time>/`` (ordinary run directories, as ``headstart fit`` writes).

The package: :mod:`~headstart.ui.app` (routes, request bodies, runs and datasets as the page shows
them), :mod:`~headstart.ui.jobs` (the background job and its training callback),
:mod:`~headstart.ui.uploads` (allowed folders, safe names, zip checks, uploaded files),
:mod:`~headstart.ui.security` (Host, Origin and token checks) and :mod:`~headstart.ui.server` (:func:`serve`). Importing this package first checks the ``ui`` extra, so
a missing FastAPI, uvicorn or python-multipart is one line naming ``pip install "headstart[ui]"``.
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("python_multipart") is None and importlib.util.find_spec("multipart") is None:
    raise ImportError('headstart ui needs python-multipart: pip install "headstart[ui]"')
try:
    import uvicorn  # noqa: F401, I001 - checked in the order ui.py imported them; tests patch headstart.ui.uvicorn.run
    import fastapi.exceptions  # noqa: F401
    import fastapi.responses  # noqa: F401
    import pydantic  # noqa: F401
except ImportError as missing:
    raise ImportError(f'headstart ui needs {missing.name}: pip install "headstart[ui]"') from None

from headstart.ui.app import STRATEGY_HELP, create_app, dataset_info, run_info  # noqa: E402
from headstart.ui.jobs import Busy, JobRunner, LiveProgress  # noqa: E402
from headstart.ui.server import DEFAULT_PORT, is_loopback, serve, url_for  # noqa: E402
from headstart.ui.uploads import MAX_UNPACKED, check_zip, extract_zip, inside, safe_name  # noqa: E402

__all__ = [
    "DEFAULT_PORT",
    "MAX_UNPACKED",
    "STRATEGY_HELP",
    "Busy",
    "JobRunner",
    "LiveProgress",
    "check_zip",
    "create_app",
    "dataset_info",
    "extract_zip",
    "inside",
    "is_loopback",
    "run_info",
    "safe_name",
    "serve",
    "url_for",
]
