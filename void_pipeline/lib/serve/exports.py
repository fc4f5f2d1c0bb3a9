"""Exports for people who run the model elsewhere: an Ollama ``Modelfile`` beside the GGUF (pure Python).

The Modelfile's TEMPLATE is Go template syntax (Ollama's). It is not written by hand for one model: the model's own
chat template (the one training rendered every row with) is rendered here, as Hugging Face renders it, on probe
conversations — system, user with the tools offered, an assistant tool call, the tool's result, a final answer —
and its literal pieces (the system header and its tool line, the tool preamble of the first user turn, the call's
JSON frame, whether tool results are JSON strings, BOS) are read off the output and checked to reproduce it
exactly. The Go template is then those same pieces around Ollama's variables: ``.System``, ``.Tools``,
``.Messages``, ``.ToolCalls`` with ``.Function.Name`` / ``.Function.Arguments``, ``.Content``.

Only the Llama 3 framing (``<|start_header_id|>role<|end_header_id|>`` … ``<|eot_id|>``) is derived; another
family's template raises ``TemplateNotSupported`` and the Modelfile is written without TEMPLATE (Ollama then
looks for a known template matching the GGUF's embedded one). Where Ollama cannot say what Jinja says, the
difference is small and stated: JSON inside the prompt (the offered tools, past calls' arguments) is Go's compact
``json.Marshal`` (``{"text":"hi"}``) where ``tojson`` writes ``{"text": "hi"}``; an assistant turn's text beside
its tool call is not written; several calls in one turn are written back to back (the agent loop makes one
call per turn).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.sandbox
import yaml

from void_pipeline.lib.files import write_text_atomic

TURN_END = "<|eot_id|>"
LLAMA3_STOPS = ("<|eot_id|>", "<|eom_id|>", "<|start_header_id|>", "<|end_header_id|>")
# Probe values: strings no template writes by itself.
SYSTEM, USER, NAME, RESULT, REPLY = "«system»", "«user»", "«tool_name»", "«tool result»", "«reply»"
ARGUMENTS = {"«argument»": "«value»"}
PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": NAME,
        "description": "«description»",
        "parameters": {"type": "object", "properties": {"«argument»": {"type": "string"}}, "required": ["«argument»"]},
    },
}


class TemplateNotSupported(ValueError):
    """The chat template is not one whose framing the Modelfile can reproduce; the message says where it differs."""


# --- rendering a chat template as Hugging Face does ---------------------------------------------------------


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def render_chat(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    add_generation_prompt: bool = False,
    **special_tokens: str,
) -> str:
    """``template`` rendered the way transformers' ``apply_chat_template`` renders it (sandboxed Jinja with
    trim_blocks and lstrip_blocks, its ``tojson``, ``raise_exception`` and ``strftime_now``)."""
    environment = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise
    environment.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    tool_list = list(tools) if tools else None
    return environment.from_string(template).render(
        messages=list(messages), tools=tool_list, add_generation_prompt=add_generation_prompt, **special_tokens
    )


# --- reading the framing off the template ------------------------------------------------------------------

HEADER_START, HEADER_END = "<|start_header_id|>", "<|end_header_id|>"


@dataclass(frozen=True)
class Llama3Framing:
    """The literal text a Llama 3 style chat template writes around the conversation's content, piece by piece."""

    bos: str  # the BOS the template writes first ("" when it writes none)
    system_open: str  # before the system text, no tools offered (header, knowledge-date lines)
    system_open_tools: str  # the same when tools are offered ("Environment: ipython")
    system_close: str
    always_system: bool  # the system turn is written even with no system text and no tools
    user_open: str
    tools_preamble: str  # the first user turn, after its header, before the offered tools
    tools_indent: int | None  # tojson's indent for each offered tool
    tool_separator: str  # after each offered tool
    user_close: str
    call_turn_open: str  # an assistant turn that calls a tool: its header
    call_open: str  # before the called function's name: '{"name": "'
    call_middle: str  # between the name and the arguments' JSON: '", "parameters": '
    call_close: str  # after the arguments: '}'
    call_turn_close: str
    tool_open: str  # the tool's result turn ("ipython")
    result_as_json: bool  # the result written as a JSON string (Llama 3.1's template)
    tool_close: str
    assistant_open: str  # an assistant turn with text
    assistant_close: str
    generation_prompt: str  # what opens the model's turn

    def render(
        self,
        system: str,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None,
        add_generation_prompt: bool = False,
    ) -> str:
        """A conversation as these pieces write it, JSON as ``tojson`` writes it: reading the pieces off the template
        is checked by rendering the probes again with this."""
        out = [self.bos]
        if system or tools or self.always_system:
            out += [self.system_open_tools if tools else self.system_open, system, self.system_close]
        for index, message in enumerate(messages):
            role, content = message["role"], message.get("content") or ""
            if role == "user":
                out.append(self.user_open)
                if tools and index == 0:
                    out.append(self.tools_preamble)
                    out += [_tojson(tool, indent=self.tools_indent) + self.tool_separator for tool in tools]
                out += [content, self.user_close]
            elif role == "assistant" and message.get("tool_calls"):
                calls = [
                    f"{self.call_open}{c['function']['name']}{self.call_middle}"
                    f"{_tojson(c['function']['arguments'])}{self.call_close}"
                    for c in message["tool_calls"]
                ]
                out += [self.call_turn_open, "\n".join(calls), self.call_turn_close]
            elif role == "assistant":
                out += [self.assistant_open, content, self.assistant_close]
            elif role == "tool":
                out += [self.tool_open, _tojson(content) if self.result_as_json else content, self.tool_close]
            else:
                raise ValueError(f"no framing for role {role!r}")
        if add_generation_prompt:
            out.append(self.generation_prompt)
        return "".join(out)


def _split(text: str, marker: str, where: str) -> tuple[str, str]:
    if marker not in text:
        raise TemplateNotSupported(f"{where}: {marker[:40]!r} is not written where a Llama 3 template writes it")
    before, _, after = text.partition(marker)
    return before, after


def _take(text: str, expected: str, where: str) -> str:
    if not text.startswith(expected):
        raise TemplateNotSupported(
            f"{where}: expected {expected!r}, the template writes {text[: len(expected) + 20]!r}"
        )
    return text[len(expected) :]


def _at_header(text: str, where: str) -> tuple[str, str]:
    """Text between two turns, split where the next turn's header starts: (end of one, start of the next)."""
    if HEADER_START not in text:
        raise TemplateNotSupported(f"{where}: no {HEADER_START} between the turns ({text[:60]!r})")
    at = text.rindex(HEADER_START)
    return text[:at], text[at:]


def _after_header(text: str) -> tuple[str, str]:
    """A turn's opening split after its header: ``<|end_header_id|>`` and the newlines after it, when written."""
    end = text.find(HEADER_END)
    end = 0 if end < 0 else end + len(HEADER_END)
    while text[end : end + 1] == "\n":
        end += 1
    return text[:end], text[end:]


def llama3_framing(chat_template: str, bos_token: str = "<|begin_of_text|>") -> Llama3Framing:
    """Read the Llama 3 framing off ``chat_template`` by rendering probe conversations (system, user with a tool
    offered, a tool call, its result, an answer); TemplateNotSupported when the template frames turns otherwise
    (another family) or the pieces read off it do not render every probe exactly as the template does."""
    call = {"id": "call00000", "type": "function", "function": {"name": NAME, "arguments": ARGUMENTS}}
    loop: list[dict[str, Any]] = [
        {"role": "user", "content": USER},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call00000", "content": RESULT},
        {"role": "assistant", "content": REPLY},
    ]
    # (system text, messages, tools, generation prompt)
    probes: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]] | None, bool]] = [
        (SYSTEM, loop, [PROBE_TOOL], False),  # the agent loop as training rendered it
        (SYSTEM, loop[:1], None, False),  # no tools offered
        ("", loop[:1], None, True),  # no system text (is the system turn written anyway?); the model's turn
        (SYSTEM, loop[:3], [PROBE_TOOL], True),  # the model's turn after a tool result
    ]
    tokens = {"bos_token": bos_token, "eos_token": TURN_END}
    try:
        rendered = [
            render_chat(chat_template, ([{"role": "system", "content": s}] if s else []) + m, t, g, **tokens)
            for s, m, t, g in probes
        ]
    except jinja2.TemplateError as err:
        raise TemplateNotSupported(f"the chat template does not render the agent loop: {err}") from err
    if HEADER_START not in rendered[1]:
        raise TemplateNotSupported(f"the chat template does not open turns with Llama 3's {HEADER_START}")
    bos = bos_token if bos_token and rendered[0].startswith(bos_token) else ""
    full, plain, bare, _ = (text.removeprefix(bos) for text in rendered)

    system_open, rest = _split(plain, SYSTEM, "system turn")
    between, user_close = _split(rest, USER, "user turn")
    system_close, user_open = _at_header(between, "system turn to user turn")
    system_open_tools, rest = _split(full, SYSTEM, "system turn with tools")
    rest = _take(rest, system_close + user_open, "first user turn with tools")
    written = {indent: _tojson(PROBE_TOOL, indent=indent) for indent in (None, 4, 2)}
    indent, tool_text = next(((i, text) for i, text in written.items() if text in rest), (None, ""))
    if not tool_text:
        raise TemplateNotSupported("the offered tools are not written with tojson in the first user turn")
    tools_preamble, rest = _split(rest, tool_text, "offered tools")
    tool_separator, rest = _split(rest, USER, "first user turn")
    rest = _take(rest, user_close, "end of the first user turn")
    opening, rest = _split(rest, NAME, "tool call")
    call_turn_open, call_open = _after_header(opening)
    call_middle, rest = _split(rest, _tojson(ARGUMENTS), "tool call arguments")
    between, rest = _split(rest, RESULT, "tool result")
    result_as_json = between.endswith('"') and rest.startswith('"')
    if result_as_json:
        between, rest = between[:-1], rest[1:]
    call_end, tool_open = _at_header(between, "tool call to tool result")
    call_close, call_turn_close = _split(call_end, TURN_END, "end of the tool call turn")
    between, assistant_close = _split(rest, REPLY, "answer")
    tool_close, assistant_open = _at_header(between, "tool result to answer")
    generation_prompt = _take(_split(bare, USER, "user turn")[1], user_close, "end of the user turn")
    framing = Llama3Framing(
        bos=bos,
        system_open=system_open,
        system_open_tools=system_open_tools,
        system_close=system_close,
        always_system=not bare.startswith(user_open),
        user_open=user_open,
        tools_preamble=tools_preamble,
        tools_indent=indent,
        tool_separator=tool_separator,
        user_close=user_close,
        call_turn_open=call_turn_open,
        call_open=call_open,
        call_middle=call_middle,
        call_close=call_close,
        call_turn_close=TURN_END + call_turn_close,
        tool_open=tool_open,
        result_as_json=result_as_json,
        tool_close=tool_close,
        assistant_open=assistant_open,
        assistant_close=assistant_close,
        generation_prompt=generation_prompt,
    )
    for number, ((system_text, messages, tools, prompt), expected) in enumerate(zip(probes, rendered, strict=True)):
        again = framing.render(system_text, messages, tools, prompt)
        if again != expected:
            at = next((i for i, (a, b) in enumerate(zip(again, expected, strict=False)) if a != b), len(again))
            raise TemplateNotSupported(
                f"the Llama 3 pieces read off the chat template do not reproduce its output (probe {number}, at "
                f"{expected[max(0, at - 30) : at + 30]!r}: {again[max(0, at - 30) : at + 30]!r})"
            )
    return framing


# --- Ollama --------------------------------------------------------------------------------------------------


def go_literal(text: str) -> str:
    """Text as a literal in a Go template (an action's ``{{`` is the only thing to escape)."""
    return text.replace("{{", '{{ "{{" }}')


def _common_prefix(a: str, b: str) -> str:
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return a[:at]


def ollama_template(framing: Llama3Framing, bos_in_template: bool) -> str:
    """The Go template Ollama renders a chat with: the framing's pieces around Ollama's variables.

    ``bos_in_template``: write BOS as text (when the GGUF's tokenizer does not add it itself, as the chat template
    did). The offered tools go into the first user turn, as the chat template puts them; the model's turn is opened
    after a user or tool message; an assistant message that comes last stays open (Ollama's convention). The
    assistant's header is written before ``{{ if .ToolCalls }}``: Ollama takes the first text inside that block as
    the marker its tool-call parser looks for in the model's output, which must be the call's own ``{``."""
    f, lit = framing, go_literal
    system_if = "{{ if true }}" if f.always_system else "{{ if or .System .Tools }}"
    result = "{{ json .Content }}" if f.result_as_json else "{{ .Content }}"
    assistant = _common_prefix(f.call_turn_open, f.assistant_open)
    call_rest, text_rest = f.call_turn_open[len(assistant) :], f.assistant_open[len(assistant) :]
    call = f"{lit(f.call_open)}{{{{ .Function.Name }}}}{lit(f.call_middle)}{{{{ json .Function.Arguments }}}}"
    parts = [
        lit(f.bos) if bos_in_template else "",
        f"{system_if}{{{{ if .Tools }}}}{lit(f.system_open_tools)}{{{{ else }}}}{lit(f.system_open)}{{{{ end }}}}",
        f"{{{{ .System }}}}{lit(f.system_close)}{{{{ end }}}}",
        "{{ $first := true }}{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}",
        f'{{{{ if eq .Role "user" }}}}{lit(f.user_open)}{{{{ if and $.Tools $first }}}}{lit(f.tools_preamble)}',
        f"{{{{ range $.Tools }}}}{{{{ json . }}}}{lit(f.tool_separator)}{{{{ end }}}}{{{{ end }}}}",
        f"{{{{ .Content }}}}{lit(f.user_close)}",
        f'{{{{ else if eq .Role "assistant" }}}}{lit(assistant)}',
        f"{{{{ if .ToolCalls }}}}{lit(call_rest)}{{{{ range .ToolCalls }}}}{call}{lit(f.call_close)}{{{{ end }}}}",
        f"{{{{ if not $last }}}}{lit(f.call_turn_close)}{{{{ end }}}}",
        f"{{{{ else }}}}{lit(text_rest)}{{{{ .Content }}}}{{{{ if not $last }}}}{lit(f.assistant_close)}{{{{ end }}}}",
        "{{ end }}",
        f'{{{{ else if eq .Role "tool" }}}}{lit(f.tool_open)}{result}{lit(f.tool_close)}',
        "{{ end }}",
        '{{ if ne .Role "system" }}{{ $first = false }}{{ end }}',
        f'{{{{ if and $last (ne .Role "assistant") }}}}{lit(f.generation_prompt)}{{{{ end }}}}',
        "{{ end }}",
    ]
    return "".join(parts)


def _quoted(keyword: str, text: str) -> str:
    if '"""' in text:
        raise ValueError(f'the Modelfile\'s {keyword} cannot hold """ (Ollama ends the block there)')
    return f'{keyword} """{text}"""'


def modelfile(
    gguf_name: str,
    *,
    template: str | None,
    system: str | None,
    stops: Sequence[str] = LLAMA3_STOPS,
    num_ctx: int | None = None,
    temperature: float = 0.7,
    top_p: float = 0.95,
    header_comment: str = "",
) -> str:
    """An Ollama Modelfile for the GGUF ``gguf_name`` (beside it): ``ollama create NAME -f Modelfile``."""
    lines = [f"# {line}" for line in header_comment.splitlines()]
    lines.append(f"FROM ./{gguf_name}")
    if template is not None:
        lines.append(_quoted("TEMPLATE", template))
    if system:
        lines.append(_quoted("SYSTEM", system))
    lines += [f"PARAMETER stop {json.dumps(stop)}" for stop in stops]
    if num_ctx:
        lines.append(f"PARAMETER num_ctx {num_ctx}")
    lines += [f"PARAMETER temperature {temperature}", f"PARAMETER top_p {top_p}"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class OllamaExport:
    text: str  # the Modelfile
    templated: bool  # it has a TEMPLATE
    note: str  # how the TEMPLATE was made, or why there is none


def ollama_modelfile(
    gguf_name: str,
    chat_template: str | None,
    *,
    bos_token: str | None,
    adds_bos: bool,
    system: str | None,
    num_ctx: int | None = None,
    header_comment: str = "",
) -> OllamaExport:
    """The Modelfile for a GGUF whose embedded chat template is ``chat_template``, with the tokenizer facts the GGUF
    read back as (its BOS, and whether its tokenizer adds BOS itself)."""
    template, note = None, "no TEMPLATE: the GGUF has no chat template"
    if chat_template:
        try:
            framing = llama3_framing(chat_template, bos_token or "")
        except TemplateNotSupported as err:
            note = f"no TEMPLATE: {err} (Ollama then looks for a known template like the GGUF's embedded one)"
        else:
            template = ollama_template(framing, bos_in_template=bool(framing.bos) and not adds_bos)
            note = "TEMPLATE read off the model's chat template (Llama 3 framing)"
    text = modelfile(gguf_name, template=template, system=system, num_ctx=num_ctx, header_comment=header_comment)
    return OllamaExport(text, template is not None, note)


@dataclass(frozen=True)
class WrittenModelfile:
    path: Path
    export: OllamaExport
    system: str | None  # the system prompt the training used (default_system_message), in the Modelfile's SYSTEM


def write_modelfile(
    gguf: Path, report: Path, modelfile_path: Path, training_config: Path, header: str
) -> WrittenModelfile:
    """The Ollama Modelfile beside ``gguf``, from what the GGUF read back as (``report``, written by the converter
    step) and the training's config (its system prompt and sequence length)."""
    facts = json.loads(report.read_text())
    trained = yaml.safe_load(training_config.read_text()) or {}
    system = trained.get("default_system_message")
    ollama = ollama_modelfile(
        gguf.name,
        facts.get("chat_template"),
        bos_token=facts.get("bos_token"),
        adds_bos=bool(facts.get("adds_bos")),
        system=system,
        num_ctx=trained.get("sequence_len"),
        header_comment=header,
    )
    write_text_atomic(modelfile_path, ollama.text)
    return WrittenModelfile(modelfile_path, ollama, system)
