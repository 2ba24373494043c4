"""service/ needs only the ONNX file and the feature code: no torch, no training package."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torch", "training", "DCLS", "dcls", "export")


def test_service_modules_do_not_import_torch_or_training():
    for path in (REPO / "service").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


def test_running_the_app_loads_neither_torch_nor_training():
    code = ("import sys; from fastapi.testclient import TestClient; from service.app import create_app;\n"
            "with TestClient(create_app()) as c: c.get('/healthz')\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'training', 'DCLS', 'export', 'librosa')]\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
