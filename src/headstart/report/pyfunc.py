"""A finished run as an MLflow pyfunc model: ``mlflow.pyfunc.load_model(uri).predict(items)`` works on it.

The model is the run's own files (config, weights, backbone assets) logged as an artifact; the
wrapper reloads them with :func:`headstart.from_pretrained` and predicts with :func:`headstart.predict`,
so MLflow serves exactly what ``headstart predict RUN`` answers. Imported only when MLflow logs a run.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from headstart import __version__
from headstart.rundir import ASSETS_DIR, CONFIG_NAME, WEIGHTS_NAME

ARTIFACT = "run"  # the key of the run's files among the model's artifacts


class HeadstartModel(mlflow.pyfunc.PythonModel):
    """Predictions of a headstart run: a table with ``label``, ``probability`` and one ``p(<class>)`` column per class.

    Input: image paths or texts, as a list, a NumPy array, a pandas Series, or a DataFrame whose
    ``item`` column (or first column) holds them.
    """

    def load_context(self, context: Any) -> None:
        from headstart.inference import from_pretrained

        self.model = from_pretrained(context.artifacts[ARTIFACT])

    def predict(self, context: Any, model_input: list[str], params: dict[str, int] | None = None) -> Any:
        import pandas as pd

        from headstart.inference import predict

        if isinstance(model_input, pd.DataFrame):
            model_input = model_input["item"] if "item" in model_input.columns else model_input.iloc[:, 0]
        items = [str(item) for item in (model_input.tolist() if hasattr(model_input, "tolist") else list(model_input))]
        batch_size = int((params or {}).get("batch_size", 64))
        rows = [{"label": p.label, "probability": p.probability, **{f"p({c})": v for c, v in p.probabilities.items()}} for p in predict(self.model, items, batch_size=batch_size)]
        return pd.DataFrame(rows, columns=["label", "probability", *[f"p({c})" for c in self.model.classes]])


def log_model(directory: Path, name: str = "model") -> Any:
    """Log the run in ``directory`` as a pyfunc model called ``name`` in the active MLflow run; returns MLflow's ModelInfo."""
    with tempfile.TemporaryDirectory(prefix="headstart-mlflow-") as tmp:
        files = Path(tmp) / ARTIFACT
        files.mkdir()
        for entry in (CONFIG_NAME, WEIGHTS_NAME):
            shutil.copy2(directory / entry, files / entry)
        if (directory / ASSETS_DIR).is_dir():
            shutil.copytree(directory / ASSETS_DIR, files / ASSETS_DIR)
        code = Path(tmp) / "headstart_model.py"  # "models from code": MLflow runs this file at load time instead of unpickling an object
        code.write_text(MODEL_CODE, encoding="utf-8")
        # requirements given, not inferred: inference would reload the model in a subprocess to watch its imports
        return mlflow.pyfunc.log_model(name=name, python_model=str(code), artifacts={ARTIFACT: str(files)}, pip_requirements=[f"headstart=={__version__}"])


MODEL_CODE = """import mlflow.models

from headstart.report.pyfunc import HeadstartModel

mlflow.models.set_model(HeadstartModel())
"""
