"""Where assets keep their files: one root, every stage's folders below it."""

import hashlib
from pathlib import Path

import dagster as dg
from pydantic import Field

from void_pipeline.lib import paths
from void_pipeline.lib.export import RepoPaths, repo_dir


class PipelineStorage(dg.ConfigurableResource):
    """The pipeline's data root (``$VOID_PIPELINE_DATA``, default ``<repo>/.data``)."""

    root: str = str(paths.data_root())
    problems: list[str] = Field(default_factory=list)
    """Settings that could not be used (lib/settings.py): every step refuses to start while there are any."""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.problems:
            raise dg.Failure(
                "the code location's settings are invalid:\n- " + "\n- ".join(self.problems),
                allow_retries=False,
            )

    @property
    def root_path(self) -> Path:
        return Path(self.root)

    def repo(self, did: str) -> RepoPaths:
        return repo_dir(self.root_path, did)

    def curate(self, did: str) -> Path:
        """Curated data of one agent: filtered_records/, context_window/, chat_dataset/."""
        return self.repo(did).root / "curate"

    def identity_cache(self, plc_url: str) -> Path:
        """DID documents cached per PLC directory (a devnet's PLC is a different world from the real one)."""
        key = hashlib.sha256(plc_url.encode()).hexdigest()[:10]
        return self.root_path / "ingest" / f"did-documents-{key}.json"
