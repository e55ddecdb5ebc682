"""The example notebook, executed headless against a real cluster."""

from __future__ import annotations

import os
from pathlib import Path

import papermill

from conftest import REPO, Cluster


def test_the_lake_tour_runs(cluster: Cluster, tmp_path: Path) -> None:
    notebook = REPO / "jobs" / "notebooks" / "lake_tour.ipynb"
    saved = dict(os.environ)
    os.environ.update(cluster.env)
    try:
        papermill.execute_notebook(
            str(notebook),
            str(tmp_path / "out.ipynb"),
            parameters={"day": "2024-03-03"},
            cwd=str(tmp_path),
            kernel_name="python3",
            progress_bar=False,
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert (tmp_path / "revenue.png").stat().st_size > 1000
