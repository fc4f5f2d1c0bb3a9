"""The handler's mention prompt, rendered from a thread. One renderer for training data and for serving.

The template is a file an operator can replace with the handler's own, in either syntax: the handler's Python
format string (``{author_handle}``; files ending ``.txt`` or ``.fmt``), or Jinja2 (``{{ author_handle }}``; files
ending ``.j2``, ``.jinja``, ``.jinja2``; any other file is Jinja2 when it holds ``{{`` or ``{%``). Variables (the handler's names, lib/curate/handler.py builds them as the handler does):

    author_handle      the mention's author                 mention_text      the post being answered
    author_name        their display name, or the handle    thread_context    the thread as the handler's YAML
    yaml_thread_data   the same YAML (newer handler name)   tree_view         an indented tree of the thread

A template that names another placeholder, shows no mention text or no thread, is an error naming the file; the
default (``void_pipeline/prompts/mention.txt``) has the handler's structure in words of our own. One trailing
newline of the file is dropped (editors add one; the handler's prompt has none).
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta

from void_pipeline.lib.curate.handler import ThreadPost, thread_yaml, tree_view
from void_pipeline.lib.curate.reply_tool import MAX_POST_CHARS, REPLY_TOOL_NAME
from void_pipeline.lib.files import read_utf8
from void_pipeline.lib.ingest.embed_views import Resolver

DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "prompts" / "mention.txt"
VARIABLES = ("author_handle", "author_name", "mention_text", "thread_context", "yaml_thread_data", "tree_view")
THREAD_VARIABLES = ("thread_context", "yaml_thread_data", "tree_view")
# A file's suffix says its syntax; other files are read as Jinja2 when they hold {{ or {%, else as a format string.
SYNTAX_BY_SUFFIX = {".j2": "jinja2", ".jinja": "jinja2", ".jinja2": "jinja2", ".txt": "format", ".fmt": "format"}

TOOL_DESCRIPTION = (
    f"You answer mentions with the tool {REPLY_TOOL_NAME}(text): one call per post, at most "
    f"{MAX_POST_CHARS} characters each; several calls make a thread."
)


class PromptTemplate:
    """A mention prompt template, checked when loaded: known placeholders only, the mention text and the thread
    both shown."""

    def __init__(self, source: str, name: str = "template", syntax: str | None = None) -> None:
        self.name = name
        self.source = source.removesuffix("\n")
        self.syntax = syntax or ("jinja2" if "{{" in source or "{%" in source else "format")
        if self.syntax == "jinja2":
            environment = jinja2.Environment(
                undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
            )
            try:
                parsed = environment.parse(self.source)
                self._jinja = environment.from_string(self.source)
            except jinja2.TemplateSyntaxError as err:
                raise ValueError(f"prompt template {name} line {err.lineno}: {err.message}") from err
            used = set(jinja2.meta.find_undeclared_variables(parsed))
        else:
            try:
                fields = [field for _, field, _, _ in string.Formatter().parse(self.source) if field is not None]
            except ValueError as err:  # a lone { or }
                raise ValueError(f"prompt template {name}: {err} (write a literal brace as {{{{ or }}}})") from err
            if "" in fields or any(f.isdigit() for f in fields):
                raise ValueError(
                    f"prompt template {name}: positional placeholder {{}}: name one of {', '.join(VARIABLES)}"
                )
            used = set(fields)
        unknown = sorted(used - set(VARIABLES))
        if unknown:
            raise ValueError(
                f"prompt template {name}: unknown placeholder {', '.join(unknown)} (known: {', '.join(VARIABLES)})"
            )
        if "mention_text" not in used:
            raise ValueError(f"prompt template {name} never shows the mention text (mention_text)")
        if not used & set(THREAD_VARIABLES):
            raise ValueError(f"prompt template {name} never shows the thread ({' or '.join(THREAD_VARIABLES)})")
        self.used = used

    @classmethod
    def from_file(cls, path: str | Path | None = None) -> PromptTemplate:
        path = Path(path) if path else DEFAULT_TEMPLATE
        if not path.exists():
            raise ValueError(f"prompt template {path} does not exist")
        return cls(read_utf8(path, "prompt template"), str(path), SYNTAX_BY_SUFFIX.get(path.suffix.lower()))

    def render(self, **variables: Any) -> str:
        if self.syntax == "format":
            return self.source.format(**variables)
        try:
            # A shared context skips merging the environment's globals into every render (most of the cost
            # when rendering tens of thousands of prompts); the template sees exactly ``variables``.
            context = self._jinja.new_context(variables, shared=True)
            return "".join(self._jinja.root_render_func(context))
        except jinja2.UndefinedError as err:
            raise ValueError(f"prompt template {self.name}: {err.message}") from err


def mention_variables(
    thread: list[ThreadPost],
    with_tree: bool = True,
    items: Mapping[str, str] | None = None,
    handler: str | None = None,
    quoted: Resolver | None = None,
) -> dict[str, str]:
    """What the handler fills in for answering ``thread[-1]`` (the mention), ``thread`` root first; ``items``: the
    posts' YAML items already written (with the same handler profile), by URI; ``handler``: the handler profile
    (lib/curate/handler.py, None: the default); ``quoted``: finds quoted posts."""
    if not thread:
        raise ValueError("a mention prompt needs at least the post being answered")
    mention = thread[-1]
    handle = mention.author_handle or mention.author_did or "unknown"
    data = thread_yaml(thread, items, profile=handler, quoted=quoted)
    return {
        "author_handle": handle,
        "author_name": mention.display_name or handle,
        "mention_text": mention.text or "",
        "thread_context": data,
        "yaml_thread_data": data,
        "tree_view": tree_view(thread) if with_tree else "",
    }


def render_mention(
    thread: list[ThreadPost],
    template: PromptTemplate,
    items: Mapping[str, str] | None = None,
    handler: str | None = None,
    quoted: Resolver | None = None,
) -> str:
    """The prompt for answering ``thread[-1]`` (the mention), with ``thread`` root first."""
    return template.render(**mention_variables(thread, "tree_view" in template.used, items, handler, quoted))


POST_TO_ANSWER = "THE POST TO ANSWER:"  # the default template's marker (prompts/mention.txt)


def post_answered(prompt: str) -> str:
    """The post a prompt of the default template asks to answer (the line after its marker, quotes included); the
    whole prompt when it has no marker (another template)."""
    lines = prompt.splitlines()
    marker = next((i for i, line in enumerate(lines) if line.strip() == POST_TO_ANSWER), None)
    if marker is None:
        return prompt
    return next((line.strip() for line in lines[marker + 1 :] if line.strip()), "")
