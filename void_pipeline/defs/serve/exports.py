"""gguf_export: the latest merged model as a GGUF file and an Ollama Modelfile, for people who run models elsewhere
(llama.cpp, Ollama, LM Studio). The conversion runs llama.cpp's own converter in the trainer environment through
Dagster Pipes (external/export_gguf.py); the Modelfile is written here from what the GGUF read back as
(lib/serve/exports.py)."""

from typing import Literal

import dagster as dg
from pydantic import Field

from void_pipeline.defs.agent import latest_training, recorded_agent
from void_pipeline.defs.automation import WHEN_INPUTS_CHANGE
from void_pipeline.defs.external import reported_metadata, run_external
from void_pipeline.defs.metadata import OWNERS, as_metadata
from void_pipeline.defs.train.assets import merged_model
from void_pipeline.lib import environments
from void_pipeline.lib.layout import RunPaths
from void_pipeline.lib.serve.exports import write_modelfile
from void_pipeline.lib.serve.metadata import export_metadata
from void_pipeline.resources.storage import PipelineStorage
from void_pipeline.resources.trainer import Trainer


class GgufExportConfig(dg.Config):
    outtype: Literal["f16", "q8_0"] = Field(
        default="f16", description="f16: the weights as trained; q8_0: 8-bit, about half the size"
    )
    converter: str | None = Field(
        default=None,
        description="a folder with llama.cpp's convert_hf_to_gguf.py, conversion/ and gguf-py/; default: the one "
        "unpacked from the llama-cpp-python source archive pinned in envs/gguf-converter.txt",
    )


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
    run = RunPaths(latest_training(layout).run_dir)
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
    modelfile = export.modelfile(config.outtype)
    header = (
        f"{layout.name}: training run {run.root.name}, {config.outtype}, written by gguf_export\n"
        f"ollama create {layout.name} -f {modelfile.name}"
    )
    written = write_modelfile(gguf, report, modelfile, run.config, header)
    if not written.export.templated:
        context.log.warning(written.export.note)
    return dg.MaterializeResult(
        metadata={**reported_metadata(invocation), **as_metadata(export_metadata(export, run, written))}
    )
