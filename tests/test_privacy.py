"""Uploads stay in memory: after the app has scored and explained them, no file holds their bytes."""

import os
import tempfile
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT
from tests.test_app import jpeg

SKIP = {".git", ".venv", "__pycache__", ".pytest_cache"}


def files_changed_since(start: float, roots: list[Path]) -> list[Path]:
    changed = []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d not in SKIP]
            for name in files:
                path = Path(folder) / name
                try:
                    if path.stat().st_mtime >= start and path.is_file():
                        changed.append(path)
                except OSError:
                    continue
    return changed


def test_uploads_are_never_written_to_disk(trained_models, monkeypatch):
    _, output_dir = trained_models
    monkeypatch.setenv("MELANOMA_MODELS_DIR", str(output_dir))
    uploads = [(f"patient_{i}.jpg", jpeg(i % 2 == 0, seed=100 + i), "image/jpeg") for i in range(3)]
    signatures = [data[len(data) // 2 : len(data) // 2 + 64] for _, data, _ in uploads]
    start = time.time() - 1
    at = AppTest.from_file("../app.py", default_timeout=300).run()
    at.file_uploader[0].set_value(uploads).run()
    assert not at.exception and len(at.dataframe[0].value) == 3
    roots = [ROOT, Path(tempfile.gettempdir()), Path.home()]
    for path in files_changed_since(start, roots):
        try:
            if path.stat().st_size > 200_000_000:
                continue
            content = path.read_bytes()
        except FileNotFoundError:
            continue  # removed since it was listed: another test worker's browser profile, for one
        assert not any(signature in content for signature in signatures), f"upload content found in {path}"
