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
