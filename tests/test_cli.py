"""The CLI: every command has --help, works through `python -m headstart`, and errors are one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from headstart.cli import main

COMMANDS = ["fit", "pretrain", "resume", "evaluate", "predict", "summary", "list", "demo", "stylize", "profile", "rank", "advise", "report", "export"]


def test_module_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "headstart", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for command in COMMANDS:
        assert command in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: headstart" in capsys.readouterr().out


def test_fit_predict_evaluate_summary(elpv_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", str(elpv_folder), "--out", str(out), "--epochs", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["directory"] == str(out) and 0 <= result["metrics"]["test"]["accuracy"] <= 1
    image = sorted(elpv_folder.rglob("*.png"))[0]
    assert main(["predict", str(out), str(image), "--json"]) == 0
    [prediction] = json.loads(capsys.readouterr().out)
    assert prediction["label"] in ("defective", "functional")
    assert main(["evaluate", str(out), str(elpv_folder)]) == 0
    assert "confusion matrix" in capsys.readouterr().out
    assert main(["summary", str(out)]) == 0
    text = capsys.readouterr().out
    assert "classifier" in text and "stage6" in text
    assert main(["summary", str(out), "--json"]) == 0
    states = {b["name"]: b["trainable"] for b in json.loads(capsys.readouterr().out)["blocks"]}
    assert states["classifier"] and not states["stage6"]  # as trained: feature extraction froze the whole body
    assert main(["summary", "efficientnet_lite0", "--json"]) == 0
    blocks = json.loads(capsys.readouterr().out)["blocks"]
    assert [b["name"] for b in blocks][:2] == ["stem", "stage0"] and blocks[0]["batchnorm_mode"] == "train"


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "missing" in err
    assert main(["summary", "efficientnet_lite9"]) == 2
    assert "did you mean" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), "x.jpg"]) == 2
    assert "not a headstart run" in capsys.readouterr().err


def test_fit_refuses_to_overwrite(fe_run, elpv_folder, capsys):
    assert main(["fit", str(elpv_folder), "--out", str(fe_run.directory)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_default_backbone_follows_what_a_table_holds(tmp_path, topics_csv):
    from headstart.cli.commands import default_backbone as _default_backbone

    listing = tmp_path / "files.csv"
    listing.write_text("path,label\na.jpg,x\nb.jpg,y\n")
    assert _default_backbone(str(listing)) == "efficientnet_lite0"  # a listing of image files
    assert _default_backbone(str(topics_csv)) == "minilm"
    assert _default_backbone(str(tmp_path)) == "efficientnet_lite0"


def test_error_line_keeps_quotes_inside_the_message(elpv_folder, capsys):
    assert main(["fit", str(elpv_folder), "--backbone", "minilm", "--quiet"]) == 2
    assert "error: 'minilm' is a text backbone" in capsys.readouterr().err


def test_typos_get_a_did_you_mean_line(capsys):
    for argv, expected in ((["fit", "data", "--stratgy", "fine-tune"], "error: unknown option --stratgy; did you mean --strategy?"),
                           (["fitt", "data"], "error: unknown command fitt; did you mean fit?")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip() == expected


def test_help_shows_defaults_and_explains_every_argument(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("--batch-size BATCH_SIZE examples per step", "(default: 32)", "(default: 0)", "(default: 0.0)", "(default: feature-extraction)", "(default: none, a linear head)"):
        assert default in text
    for command in ("predict", "evaluate"):
        parser = next(a for a in __import__("headstart.cli.parser", fromlist=["build_parser"]).build_parser()._actions if a.dest == "command").choices[command]
        assert all(a.help for a in parser._actions), [a.dest for a in parser._actions if not a.help]


def test_predict_top_k_batch_size_and_output_file(fe_run, elpv_folder, tmp_path, capsys):
    import csv

    images = [str(p) for p in sorted(elpv_folder.rglob("*.png"))[:3]]
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(fe_run.directory), *images, "--top-k", "2", "--batch-size", "2", "--output", str(out)]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [(r["input"], r["rank"]) for r in rows] == [(i, rank) for i in images for rank in ("1", "2")]
    assert all(float(a["probability"]) >= float(b["probability"]) for a, b in zip(rows[::2], rows[1::2]))
    capsys.readouterr()
    assert main(["predict", str(fe_run.directory), images[0], "--output", str(out)]) == 2  # never overwritten silently
    assert "--overwrite" in capsys.readouterr().err
    assert main(["predict", str(fe_run.directory), images[0], "--output", str(tmp_path / "p.json"), "--top-k", "2"]) == 0
    [record] = json.loads((tmp_path / "p.json").read_text(encoding="utf-8"))
    assert [t["label"] for t in record["top"]] == sorted(record["probabilities"], key=record["probabilities"].get, reverse=True)


def test_prediction_table_keeps_file_names_whole_in_80_columns():
    from rich.console import Console

    from headstart.cli.tables import prediction_table

    folder = "/data/" + "a-very-long-folder-name/" * 4
    rows = [{"input": folder + f"cell_{i:04d}_electroluminescence.png", "rank": 1, "label": "defective", "probability": 0.9} for i in range(2)]
    console = Console(width=80, record=True)
    console.print(prediction_table(rows, top_k=1, files=True))
    text = console.export_text()
    assert "cell_0000_electroluminescence.png" in text and "cell_0001_electroluminescence.png" in text


def test_last_line_names_the_report_and_no_repr(fe_run, capsys):
    from headstart.cli.commands import _print_run

    _print_run(fe_run, as_json=False)
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == f"saved to {fe_run.directory}; report: {fe_run.directory / 'report.html'}"
    assert main(["summary", str(fe_run.directory)]) == 0
    assert "Report(" not in capsys.readouterr().out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_commands_reuse_freed_memory_instead_of_faulting_it_in_again():
    import os
    from pathlib import Path

    script = (  # 64 MiB malloc'ed, written, freed, 5 times: what each forward pass does with an activation (torch allocates with malloc too)
        "import ctypes, resource\n"
        "from headstart.cli import reuse_freed_memory\n"
        "print(reuse_freed_memory())\n"
        "libc = ctypes.CDLL('libc.so.6'); libc.malloc.restype = ctypes.c_void_p; libc.free.argtypes = [ctypes.c_void_p]\n"
        "def step():\n"
        "    block = libc.malloc(2**26); ctypes.memset(block, 1, 2**26); libc.free(block)\n"
        "step()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(4):\n"
        "    step()\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    faults = {}
    for setting in ("reuse", "default"):
        env = {**os.environ, "HEADSTART_MALLOC": setting, "PYTHONPATH": src}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout.split()
        faults[setting] = (out[0], int(out[1]))
    if faults["reuse"][0] != "True":
        pytest.skip("not glibc")
    assert faults["default"][0] == "False" and faults["default"][1] > 4 * 15_000  # each 64 MiB (16,384 pages) faulted in again
    assert faults["reuse"][1] < 2_000  # the freed pages are reused
