"""Where assets keep their files: one data root and the agent's name; every path comes from lib/layout.py."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from void_pipeline.lib.layout import AgentLayout, DataLayout, data_root


class PipelineStorage(dg.ConfigurableResource):
    """The pipeline's data root (``$VOID_PIPELINE_DATA``, default ``<repo>/.data``) and the agent whose folder
    (``agents/<agent>/``) the assets read and write."""

    root: str = str(data_root(check=False))  # checked by definitions.py, which reports it as a problem
    agent: str = Field(default="void", description="the agent's folder name (VOID_AGENT); one name per agent")
    problems: list[str] = Field(default_factory=list)
    """Settings that could not be used (lib/settings.py): every step refuses to start while there are any."""
    settings: dict[str, str] = Field(default_factory=dict)
    """Every VOID_* variable in force, ``value  (origin)``: what runs show as where their settings came from."""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.problems:
            raise dg.Failure(
                "the code location's settings are invalid:\n- " + "\n- ".join(self.problems),
                allow_retries=False,
            )

    @property
    def root_path(self) -> Path:
        return Path(self.root)

    @property
    def layout(self) -> DataLayout:
        return DataLayout(self.root_path)

    @property
    def agent_layout(self) -> AgentLayout:
        return self.layout.agent(self.agent)
