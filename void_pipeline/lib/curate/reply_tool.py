"""The reply tool: the one tool the model calls (a post per call), its result, and what makes a call valid.

Shared by curate (the training rows' calls and tool turns), evaluate and serve; stdlib only, so the server image
(vLLM's, without the orchestrator's packages) can import the serving code.
"""

from __future__ import annotations

import unicodedata
from typing import Any

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


def grapheme_count(text: str) -> int:
    """Approximate extended grapheme clusters: code points that do not extend the previous character.

    Combining marks, zero-width joiners (and the character each joins), variation selectors and emoji skin
    tone modifiers all belong to the cluster before them. Good enough to apply Bluesky's 300-grapheme limit
    without rejecting valid emoji-heavy posts.
    """
    count = 0
    joined = False
    for char in text:
        code = ord(char)
        if joined:
            joined = False
            continue
        if char == "\u200d":
            joined = True
            continue
        if unicodedata.combining(char) or 0xFE00 <= code <= 0xFE0F or 0x1F3FB <= code <= 0x1F3FF:
            continue
        if 0xE0020 <= code <= 0xE007F:  # tag characters (flag sequences)
            continue
        count += 1
    return count


def reply_tool_result(index: int, text: str) -> str:
    """What the reply tool answers after posting (the training rows' tool turns; the handler client sends the same)."""
    return f"Posted reply {index + 1} ({len(text)} characters)."


def reply_call_errors(arguments: Any, allowed: frozenset[str] = frozenset({"text"})) -> list[str]:
    """Why ``arguments`` is not a valid call of the reply tool (empty list: valid). ``allowed``: the argument names
    the tool declares (``text`` always; a runtime's tool may declare more, e.g. ``lang``)."""
    if not isinstance(arguments, dict):
        return ["arguments must be a JSON object"]
    errors = []
    if "text" not in arguments or not set(arguments) <= allowed | {"text"}:
        names = ", ".join(sorted(allowed | {"text"}))
        errors.append(f"arguments must have the key 'text' and no other than {names}, got {sorted(arguments)}")
    text = arguments.get("text")
    if not isinstance(text, str) or not text.strip():
        errors.append("text must be a non-empty string")
    elif len(text) > MAX_POST_CHARS:
        errors.append(f"text is {len(text)} characters, over {MAX_POST_CHARS}")
    return errors
