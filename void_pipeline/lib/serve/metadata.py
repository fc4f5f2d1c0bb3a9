"""What a promotion shows in the UI: plain values (defs/metadata.as_metadata shows them)."""

from __future__ import annotations

import shlex
from typing import Any

from void_pipeline.lib.evaluate.evaluation import SmokeCase
from void_pipeline.lib.handoffs import ServingOutcome
from void_pipeline.lib.layout import AgentLayout, ExportPaths, RunPaths
from void_pipeline.lib.report import Markdown, Url, fenced
from void_pipeline.lib.serve.bundle import Bundle
from void_pipeline.lib.serve.exports import WrittenModelfile
from void_pipeline.lib.settings import SERVE_API_KEY_ENV


def reply_command(served: ServingOutcome, bundle: Bundle, layout: AgentLayout) -> Markdown:
    """The shell lines that ask the served model to answer a post, from the repository root: the endpoint, the served
    model and this agent's data (the bundle renders the prompt); the key by its variable's name, never its value."""
    where = f"--data {shlex.quote(str(layout.root.parent.parent))} --agent {shlex.quote(layout.name)}"
    model = shlex.quote(bundle.served_model_name)
    lines = [f"export {SERVE_API_KEY_ENV}=...  # the key the endpoint was started with"]
    if served.kept:
        lines.append(f"./void-pipeline reply AT_URI --endpoint {shlex.quote(served.url)} --model {model} {where}")
    else:  # the smoke test's server was a temporary one
        lines.append(f"./void-pipeline serve up {where}")
        lines.append(f"./void-pipeline reply AT_URI --model {model} {where}")
    text = "\n".join(lines)
    return Markdown(f"AT_URI: the post to answer (`at://...`); a dry run unless `--post`\n\n```shell\n{text}\n```")


def served_metadata(
    bundle: Bundle,
    previous: int | None,
    served: ServingOutcome,
    case: SmokeCase,
    production: dict[str, Any],
    layout: AgentLayout,
) -> dict[str, Any]:
    """The bundle, where it is served and how to ask it, its MLflow model version (``production``: the entries
    mark_production made) and the smoke answer."""
    answer = served.answer
    return {
        "bundle_version": bundle.version,
        "bundle": bundle.paths.root,
        "previous_version": previous or 0,
        "endpoint": Url(f"{served.url}/v1") if served.kept else "none running",
        "served_models": served.models,
        "served_model_name": bundle.served_model_name,
        "how": served.how,
        "base_model": bundle.base_model,
        "tool_call_parser": bundle.tool_call_parser,
        "reply_command": reply_command(served, bundle, layout),
        **production,
        "smoke_prompt": fenced(case.prompt),
        "smoke_example": case.example_id,
        # the same adapter, prompt, sampling and seed as in evaluation: on the same engine, the same posts
        "smoke_reproduces_evaluation": answer.posts == case.evaluated_posts,
        "smoke_answer": Markdown("\n".join(f"{i}. {p}" for i, p in enumerate(answer.posts, 1)) or "(no post)"),
        "smoke_latency_s": answer.latency_s,
    }


SYSTEM_SHOWN = 400  # characters of the system prompt the metadata's Modelfile shows (the file has all of it)


def modelfile_shown(modelfile: str, system: str | None) -> Markdown:
    """The Modelfile for the metadata, its SYSTEM block cut short (the real system prompt is tens of kilobytes)."""
    if system and len(system) > SYSTEM_SHOWN:
        modelfile = modelfile.replace(system, f"{system[:SYSTEM_SHOWN]}… ({len(system)} characters in the file)")
    return Markdown(f"```\n{modelfile}```")


def export_metadata(export: ExportPaths, run: RunPaths, written: WrittenModelfile) -> dict[str, Any]:
    return {
        "export_dir": export.root,
        "run_dir": run.root,
        "modelfile_path": written.path,
        "modelfile": modelfile_shown(written.export.text, written.system),
        "modelfile_template": written.export.note,
    }
