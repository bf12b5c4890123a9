"""The torchvision/CPU-torch workaround: applied only when needed, and timm works after it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch


def test_import_headstart_then_timm_models_work():
    import timm

    import headstart  # noqa: F401  (installs the hook before timm imports torchvision)

    model = timm.create_model("resnet18", pretrained=False, num_classes=3).eval()
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 3)
    from torchvision import transforms

    assert transforms.CenterCrop(8)(torch.zeros(3, 16, 16)).shape == (3, 8, 8)


def _run_with_fake_torchvision(tmp_path: Path, init_body: str) -> subprocess.CompletedProcess[str]:
    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text(textwrap.dedent(init_body))
    src = Path(__file__).resolve().parents[1] / "src"
    code = textwrap.dedent(
        """
        import importlib.util, sys, torch
        # load the module on its own: the package __init__ would import timm, which needs a real torchvision
        spec = importlib.util.spec_from_file_location("hs_torchvision_fix", sys.argv[1])
        fix = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(fix)
        try:
            module = fix.import_torchvision()
            try:
                torch._C._get_schema("torchvision::nms", "")
                has_schema = True
            except RuntimeError:
                has_schema = False
            print("OK", module.__version__, fix.patched, has_schema)
        except RuntimeError as error:
            print("RAISED", error)
        """
    )
    return subprocess.run([sys.executable, "-c", code, str(src / "headstart" / "_torchvision.py")], capture_output=True, text=True, env={"PYTHONPATH": f"{tmp_path}:{src}", "PATH": "/usr/bin:/bin"}, timeout=120)


def test_untouched_where_torchvision_imports_normally(tmp_path):
    result = _run_with_fake_torchvision(tmp_path, "__version__ = 'fake-ok'\n")
    assert "OK fake-ok False False" in result.stdout, result.stdout + result.stderr


def test_other_import_errors_are_not_hidden(tmp_path):
    result = _run_with_fake_torchvision(tmp_path, "raise RuntimeError('something else broke')\n")
    assert "RAISED something else broke" in result.stdout, result.stdout + result.stderr


def test_workaround_declares_schema_only_after_the_known_failure(tmp_path):
    body = """
    import torch
    try:
        torch._C._get_schema("torchvision::nms", "")
    except RuntimeError:
        raise RuntimeError("operator torchvision::nms does not exist")
    __version__ = "fake-fixed"
    """
    result = _run_with_fake_torchvision(tmp_path, body)
    assert "OK fake-fixed True True" in result.stdout, result.stdout + result.stderr
