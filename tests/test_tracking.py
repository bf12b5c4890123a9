"""`--log-to tensorboard|mlflow`: what a fit logs is read back from a real local store."""

from __future__ import annotations

import numpy as np
import pytest

from headstart.cli import main

pytestmark = pytest.mark.report  # what a fit logs includes its report and interpretation


def test_tensorboard_event_files(elpv_folder, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (pip install headstart[tensorboard])")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from headstart.api import fit

    run = fit(elpv_folder, out=tmp_path / "run", epochs=6, patience=None, quiet=True, log_to="tensorboard")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    val_loss = events.Scalars("loss/val")
    assert [e.step for e in val_loss] == [r["epoch"] for r in run.history.epochs]
    assert [e.value for e in val_loss] == pytest.approx([r["val_loss"] for r in run.history.epochs], rel=1e-6)
    assert events.Scalars("test/accuracy")[0].value == pytest.approx(run.metrics["test"]["accuracy"], rel=1e-6)
    assert (tmp_path / "run" / "tensorboard" / "report.html").is_file()
    # the held-out split: hparams with the final metrics, one PR curve per class, the projector's embedding
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util import tensor_util

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"tensors": 0}).Reload()
    start = plugin_data_pb2.HParamsPluginData.FromString(events.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["strategy"].string_value == "feature-extraction" and start.hparams["epochs"].number_value == 6
    assert start.hparams["hidden"].string_value == "None"
    assert events.Scalars("hparam/test_accuracy")[0].value == pytest.approx(run.metrics["test"]["accuracy"], rel=1e-6)
    classes = run.model.classes
    labels = np.array([classes.index(e["true"]) for e in run.predictions["examples"]])
    for k, name in enumerate(classes):
        curve = tensor_util.make_ndarray(events.Tensors(f"pr/{name}")[0].tensor_proto)  # rows: TP, FP, TN, FN, precision, recall
        assert curve[0, 0] == (labels == k).sum() and curve[1, 0] == (labels != k).sum()  # threshold 0: everything predicted positive
    projector = tmp_path / "run" / "tensorboard"
    assert 'tensor_name: "test_features:00000"' in (projector / "projector_config.pbtxt").read_text()
    rows = (projector / "00000" / "test_features" / "tensors.tsv").read_text().splitlines()
    meta = (projector / "00000" / "test_features" / "metadata.tsv").read_text().splitlines()
    assert len(rows) == len(labels) and len(rows[0].split("\t")) == run.model.backbone.feature_dim
    assert meta[0] == "true\tpredicted\tcorrect" and meta[1].split("\t") == [classes[labels[0]], run.predictions["examples"][0]["predicted"],
                                                                              str(classes[labels[0]] == run.predictions["examples"][0]["predicted"]).lower()]  # fmt: skip


def test_mlflow_file_store(elpv_folder, tmp_path, monkeypatch, capsys):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install headstart[mlflow])")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 retires the file store; a local folder is still the simplest real store
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "headstart-tests")
    uri = (tmp_path / "mlruns").as_uri()
    out = tmp_path / "run"
    assert main(["fit", str(elpv_folder), "--out", str(out), "--epochs", "4", "--patience", "100", "--log-to", "mlflow", "--log-uri", uri, "--quiet"]) == 0
    history = __import__("json").loads((out / "history.json").read_text())["epochs"]
    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("headstart-tests").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["strategy"] == "feature-extraction"
    logged = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [(m.step, m.value) for m in logged] == [(r["epoch"], pytest.approx(r["val_accuracy"])) for r in history]
    metrics = __import__("json").loads((out / "metrics.json").read_text())
    assert run.data.metrics["test/macro_f1"] == pytest.approx(metrics["test"]["macro_f1"])
    assert {"report.html", "metrics.json", "history.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    # the model, as a pyfunc: what `headstart predict` answers
    pd = pytest.importorskip("pandas", reason="mlflow.pyfunc needs pandas (part of the mlflow extra)")
    import mlflow.pyfunc

    from headstart.inference import predict

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    items = [e["item"] for e in __import__("json").loads((out / "predictions.json").read_text())["examples"][:3]]
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    expected = predict(out, items)
    for table in (model.predict(items), model.predict(pd.DataFrame({"item": items}))):
        assert list(table["label"]) == [p.label for p in expected]
        assert table["probability"].tolist() == pytest.approx([p.probability for p in expected], abs=1e-6)
        assert table[f"p({expected[0].label})"].iloc[0] == pytest.approx(expected[0].probability, abs=1e-6)


@pytest.mark.parametrize("error, status", [(KeyboardInterrupt, "KILLED"), (RuntimeError, "FAILED")])
def test_mlflow_run_is_closed_when_the_fit_breaks(error, status, elpv_folder, tmp_path, monkeypatch):
    """Ctrl-C or a crash mid-fit ends the MLflow run (KILLED / FAILED, with the error as a tag) instead of leaving it RUNNING."""
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install headstart[mlflow])")
    from mlflow.tracking import MlflowClient

    from headstart.api import fit
    from headstart.training.callbacks import Callback

    class Break(Callback):
        def on_epoch_end(self, state):
            if state.epoch == 2:
                raise error("stopped by the test")

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    with pytest.raises(error):
        fit(elpv_folder, out=tmp_path / "run", epochs=4, log_to="mlflow", log_uri=uri, callbacks=[Break()], quiet=True)
    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == status and run.data.tags["error"].startswith(error.__name__)  # Ctrl-C's message says how to resume
    assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 2  # the epochs before the break were logged
