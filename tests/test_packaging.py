"""The repository layout must never shadow the stdlib `platform` module."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_platform_from_repo_root_is_stdlib() -> None:
    code = "import platform, sys; print(platform.__file__); print(platform.python_version())"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    path, version = out.stdout.split()
    assert not path.startswith(str(REPO)), path
    assert version == ".".join(map(str, sys.version_info[:3]))


def test_numpy_and_torch_import_from_repo_root() -> None:
    code = "import numpy, torch, salient.platform.cli, salient.models.configs; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert not (REPO / "platform" / "__init__.py").exists()


def test_models_do_not_import_platform_ray_or_mlflow() -> None:
    code = (
        "import sys, importlib, pkgutil, salient.models as m\n"
        "for info in pkgutil.iter_modules(m.__path__): importlib.import_module('salient.models.' + info.name)\n"
        "bad = [n for n in sys.modules if n.split('.')[0] in ('ray', 'mlflow', 'pydantic') or n.startswith('salient.platform')]\n"
        "print(bad); assert not bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
