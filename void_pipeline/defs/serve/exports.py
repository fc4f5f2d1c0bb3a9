"""gguf_export: the latest merged model as a GGUF file and an Ollama Modelfile, for people who run models elsewhere
(llama.cpp, Ollama, LM Studio). The conversion runs llama.cpp's own converter in the trainer environment through
Dagster Pipes (external/export_gguf.py); the Modelfile is written here from what the GGUF read back as
(lib/serve/exports.py)."""

import json
from pathlib import Path
from typing import Literal

import dagster as dg
import yaml
from pydantic import Field

from void_pipeline.defs.agent import latest_training, recorded_agent
from void_pipeline.defs.automation import WHEN_INPUTS_CHANGE
from void_pipeline.defs.metadata import OWNERS
from void_pipeline.defs.train.assets import merged_model, run_external
from void_pipeline.lib import environments
from void_pipeline.lib.files import write_text_atomic
from void_pipeline.lib.layout import RunPaths
from void_pipeline.lib.serve.exports import ollama_modelfile
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.resources.trainer import Trainer

SYSTEM_SHOWN = 400  # characters of the system prompt the metadata's Modelfile shows (the file has all of it)


class GgufExportConfig(dg.Config):
    outtype: Literal["f16", "q8_0"] = Field(
        default="f16", description="f16: the weights as trained; q8_0: 8-bit, about half the size"
    )
    converter: str | None = Field(
        default=None,
        description="a folder with llama.cpp's convert_hf_to_gguf.py, conversion/ and gguf-py/; default: the one "
        "unpacked from the llama-cpp-python source archive pinned in envs/gguf-converter.txt",
    )


def shown(modelfile: str, system: str | None) -> str:
    """The Modelfile for the metadata, its SYSTEM block cut short (the real system prompt is tens of kilobytes)."""
    if system and len(system) > SYSTEM_SHOWN:
        modelfile = modelfile.replace(system, f"{system[:SYSTEM_SHOWN]}… ({len(system)} characters in the file)")
    return f"```\n{modelfile}```"


@dg.asset(
    deps=[merged_model],
    group_name="serve",
    owners=OWNERS,
    kinds={"gguf", "ollama"},
    description="The latest merged model converted to GGUF with llama.cpp's own converter and read back (tensors "
    "checked against the safetensors), with an Ollama Modelfile whose template frames turns as training did.",
    automation_condition=WHEN_INPUTS_CHANGE,
)
def gguf_export(
    context: dg.AssetExecutionContext,
    config: GgufExportConfig,
    storage: PipelineStorage,
    trainer: Trainer,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    layout = recorded_agent(storage)[1]
    latest = latest_training(layout)
    run = RunPaths(Path(latest["run_dir"]))
    if not (run.merged / "config.json").exists():
        raise dg.Failure(f"no merged model in {run.merged}: materialize merged_model first", allow_retries=False)
    export = layout.serve.export(run.root.name)
    gguf, report = export.gguf(config.outtype), export.report(config.outtype)
    converter = config.converter or str(environments.ensure("gguf-converter"))
    context.log.info(f"exporting {run.merged} as {config.outtype} GGUF to {gguf}")
    invocation = run_external(
        context,
        pipes_subprocess_client,
        trainer,
        "void_pipeline.external.export_gguf",
        run,
        {
            "merged": str(run.merged),
            "gguf": str(gguf),
            "report": str(report),
            "outtype": config.outtype,
            "converter": converter,
            "model_name": f"{layout.name}-{run.root.name}",
        },
    )
    facts = json.loads(report.read_text())
    trained = yaml.safe_load(run.config.read_text()) or {}
    system = trained.get("default_system_message")
    ollama = ollama_modelfile(
        gguf.name,
        facts.get("chat_template"),
        bos_token=facts.get("bos_token"),
        adds_bos=bool(facts.get("adds_bos")),
        system=system,
        num_ctx=trained.get("sequence_len"),
        header_comment=f"{layout.name}: training run {run.root.name}, {config.outtype}, written by gguf_export\n"
        f"ollama create {layout.name} -f {export.modelfile(config.outtype).name}",
    )
    write_text_atomic(export.modelfile(config.outtype), ollama.text)
    if not ollama.templated:
        context.log.warning(ollama.note)
    return dg.MaterializeResult(
        metadata={
            **(invocation.get_materialize_result().metadata or {}),
            "export_dir": dg.MetadataValue.path(str(export.root)),
            "run_dir": dg.MetadataValue.path(str(run.root)),
            "modelfile_path": dg.MetadataValue.path(str(export.modelfile(config.outtype))),
            "modelfile": dg.MetadataValue.md(shown(ollama.text, system)),
            "modelfile_template": ollama.note,
        }
    )
