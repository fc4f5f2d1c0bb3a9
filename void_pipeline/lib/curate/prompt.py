"""The handler's mention prompt, rendered from a thread. One renderer for training data and for serving.

The template is a Jinja2 file (default ``void_pipeline/prompts/mention.j2``); an operator replaces it with the
handler's own. Variables: ``author_handle``, ``author_display_name``, ``post_text`` (the most recent post, the
one being answered), ``thread_tree`` (an indented tree view, root first) and ``thread_yaml`` (full post data).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import orjson

DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "prompts" / "mention.j2"
REPLY_TOOL_NAME = "add_post_to_bluesky_reply_thread"
MAX_POST_CHARS = 300
REPLY_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": REPLY_TOOL_NAME,
        "description": "Post one reply of at most 300 characters in the current thread. Call it again to continue "
        "the thread: each call becomes the next post, in order.",
        "parameters": {
            "type": "object",
            "properties": {
                "text": {"type": "string", "description": "The post's text.", "maxLength": MAX_POST_CHARS},
            },
            "required": ["text"],
            "additionalProperties": False,
        },
    },
}
TOOL_DESCRIPTION = (
    f"You answer mentions with the tool {REPLY_TOOL_NAME}(text): one call per post, at most "
    f"{MAX_POST_CHARS} characters each; several calls make a thread."
)


@dataclass(frozen=True)
class ThreadPost:
    uri: str
    author_handle: str | None
    author_did: str | None
    text: str | None
    created_at: str | None
    available: bool = True
    reason: str | None = None
    display_name: str | None = None

    @property
    def who(self) -> str:
        return f"@{self.author_handle}" if self.author_handle else (self.author_did or "unknown")


class PromptTemplate:
    def __init__(self, source: str, name: str = "template") -> None:
        environment = jinja2.Environment(
            undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False
        )
        try:
            self._template = environment.from_string(source)
        except jinja2.TemplateSyntaxError as err:
            raise ValueError(f"prompt template {name} line {err.lineno}: {err.message}") from err
        self.name = name
        self.source = source

    @classmethod
    def from_file(cls, path: str | Path | None = None) -> PromptTemplate:
        path = Path(path) if path else DEFAULT_TEMPLATE
        if not path.exists():
            raise ValueError(f"prompt template {path} does not exist")
        return cls(path.read_text(), str(path))

    def render(self, **variables: Any) -> str:
        try:
            # A shared context skips merging the environment's globals into every render (most of the cost
            # when rendering tens of thousands of prompts); the template sees exactly ``variables``.
            context = self._template.new_context(variables, shared=True)
            return "".join(self._template.root_render_func(context)).strip()
        except jinja2.UndefinedError as err:
            raise ValueError(f"prompt template {self.name}: {err.message}") from err


@functools.lru_cache(maxsize=400_000)
def tree_line(post: ThreadPost, depth: int, last: bool) -> str:
    text = " ".join((post.text or "").split()) if post.available else f"[unavailable: {post.reason}]"
    return f"{'   ' * depth}└─ {post.who}: {text}{'  ← most recent' if last else ''}"


def thread_tree(thread: list[ThreadPost]) -> str:
    """An indented tree view, root first; lines are cached (a thread's posts recur in every reply of it)."""
    return "\n".join(tree_line(post, depth, depth == len(thread) - 1) for depth, post in enumerate(thread))


def yaml_scalar(value: str | None) -> str:
    """A YAML scalar that always parses back to ``value``: null, or a double-quoted (JSON-escaped) string."""
    return "null" if value is None else orjson.dumps(value).decode()


@functools.lru_cache(maxsize=200_000)
def post_yaml(post: ThreadPost) -> str:
    """One post as a YAML list item. Cached: a thread's posts recur in every reply of that thread."""
    lines = [
        f"- uri: {yaml_scalar(post.uri)}",
        "  author:",
        f"    handle: {yaml_scalar(post.author_handle)}",
        f"    did: {yaml_scalar(post.author_did)}",
    ]
    if post.display_name:
        lines.append(f"    display_name: {yaml_scalar(post.display_name)}")
    if post.available:
        lines.append(f"  text: {yaml_scalar(post.text)}")
        lines.append(f"  created_at: {yaml_scalar(post.created_at)}")
    else:
        lines.append(f"  unavailable: {yaml_scalar(post.reason)}")
    return "\n".join(lines)


def thread_yaml(thread: list[ThreadPost]) -> str:
    """Full post data as YAML (written directly: a YAML library costs milliseconds per thread)."""
    return "posts:\n" + "\n".join(post_yaml(post) for post in thread)


def render_mention(thread: list[ThreadPost], template: PromptTemplate) -> str:
    """The prompt for answering ``thread[-1]`` (the mention), with ``thread`` root first."""
    if not thread:
        raise ValueError("a mention prompt needs at least the post being answered")
    mention = thread[-1]
    return template.render(
        author_handle=mention.author_handle or mention.author_did or "unknown",
        author_display_name=mention.display_name or "",
        post_text=mention.text if mention.available else f"[unavailable: {mention.reason}]",
        thread_tree=thread_tree(thread),
        thread_yaml=thread_yaml(thread),
    )


def reply_call_errors(arguments: Any) -> list[str]:
    """Why ``arguments`` is not a valid call of the reply tool (empty list: valid)."""
    if not isinstance(arguments, dict):
        return ["arguments must be a JSON object"]
    errors = []
    if set(arguments) != {"text"}:
        errors.append(f"arguments must have exactly the key 'text', got {sorted(arguments)}")
    text = arguments.get("text")
    if not isinstance(text, str) or not text.strip():
        errors.append("text must be a non-empty string")
    elif len(text) > MAX_POST_CHARS:
        errors.append(f"text is {len(text)} characters, over {MAX_POST_CHARS}")
    return errors
