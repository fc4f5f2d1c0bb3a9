"""PNG plots for metadata and MLflow: a figure drawn off-screen and written atomically."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from void_pipeline.lib.files import write_bytes_atomic


@contextmanager
def png_figure(path: Path, **subplots: Any) -> Iterator[tuple[Any, Any]]:
    """``(figure, axes)`` from ``pyplot.subplots(**subplots)`` to draw on; on leaving the block the figure is laid
    out, written to ``path`` as a PNG (atomically) and closed. Nothing is written when drawing raises."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to a buffer
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(**subplots)
    try:
        yield figure, axes
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        write_bytes_atomic(path, buffer.getvalue())
    finally:
        pyplot.close(figure)
