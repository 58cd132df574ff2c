"""The repository layout must never shadow the stdlib `platform` module."""

import ast
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
    # Importing every model module must not pull in the platform layer or Ray.
    code = (
        "import sys, importlib, pkgutil, salient.models as m\n"
        "for info in pkgutil.iter_modules(m.__path__): importlib.import_module('salient.models.' + info.name)\n"
        "bad = [n for n in sys.modules if n.split('.')[0] == 'ray' or n.startswith('salient.platform')]\n"
        "print(bad); assert not bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    # MONAI's `monai.networks.nets` imports its MLflow handler itself when mlflow is installed,
    # so sys.modules cannot tell; the source of salient.models must not name them at all.
    banned = ("mlflow", "ray", "pydantic", "salient.platform", "salient.dashboards")
    for path in sorted((REPO / "models").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                assert not any(name == b or name.startswith(b + ".") for b in banned), (path.name, name)


def test_dashboards_do_not_import_platform_models_ray_or_mlflow() -> None:
    # Results in, figures out: the dashboards read through the ResultsSource protocol, and need
    # no torch (the statistics they share with the platform are numpy: salient.dashboards.stats).
    banned = ("mlflow", "ray", "salient.platform", "salient.models", "torch")
    for path in sorted((REPO / "dashboards").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert not any(name == b or name.startswith(b + ".") for b in banned), (path.name, name)
