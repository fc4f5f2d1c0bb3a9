"""The mention prompt: a golden rendering, replaceable templates, and the reply tool's contract.

To accept an intended change of the default template, regenerate the golden file:
    python -c "from void_pipeline_tests.curate.test_prompt import write_golden; write_golden()"
"""

from __future__ import annotations

from pathlib import Path

import pytest

from void_pipeline.lib.curate.prompt import PromptTemplate, ThreadPost, render_mention, reply_call_errors

GOLDEN = Path(__file__).parent / "golden" / "mention_prompt.txt"
THREAD = [
    ThreadPost(
        "at://did:plc:aaa/app.bsky.feed.post/3kroot",
        "ada.bsky.test",
        "did:plc:aaa",
        "is federated moderation actually new, or just louder?",
        "2025-06-01T10:00:00.000Z",
    ),
    ThreadPost(
        "at://did:plc:void/app.bsky.feed.post/3kvoid",
        "void.comind.test",
        "did:plc:void",
        "Partially correct. The mechanisms are old; the scale is new.",
        "2025-06-01T10:02:00.000Z",
    ),
    ThreadPost("at://did:plc:bbb/app.bsky.feed.post/3kgone", None, "did:plc:bbb", None, None, False, "deleted"),
    ThreadPost(
        "at://did:plc:aaa/app.bsky.feed.post/3kask",
        "ada.bsky.test",
        "did:plc:aaa",
        "@void.comind.test so what changes at scale?\nbe specific: 'labels', \"feeds\"?",
        "2025-06-01T10:09:00.000Z",
        display_name="Ada",
    ),
]


def write_golden() -> None:
    GOLDEN.write_text(render_mention(THREAD, PromptTemplate.from_file()) + "\n")


def test_the_default_template_renders_a_known_thread_exactly() -> None:
    assert render_mention(THREAD, PromptTemplate.from_file()) + "\n" == GOLDEN.read_text()


def test_the_rendering_carries_the_thread_in_both_views() -> None:
    text = render_mention(THREAD, PromptTemplate.from_file())
    assert "mention on Bluesky from @ada.bsky.test (Ada)" in text
    assert text.index("@ada.bsky.test: is federated") < text.index("@void.comind.test: Partially")
    assert "[unavailable: deleted]" in text and "unavailable: deleted" in text
    assert "add_post_to_bluesky_reply_thread" in text


def test_an_operator_template_replaces_the_default(tmp_path: Path) -> None:
    custom = tmp_path / "handler.j2"
    custom.write_text("@{{ author_handle }} says: {{ post_text }}\n---\n{{ thread_tree }}")
    text = render_mention(THREAD, PromptTemplate.from_file(custom))
    assert text.startswith("@ada.bsky.test says: @void.comind.test so what changes at scale?")


def test_template_errors_name_the_problem(tmp_path: Path) -> None:
    broken = tmp_path / "broken.j2"
    broken.write_text("{{ author_handle }} {{ no_such_variable }}")
    with pytest.raises(ValueError, match="no_such_variable"):
        render_mention(THREAD, PromptTemplate.from_file(broken))
    broken.write_text("{% if %}")
    with pytest.raises(ValueError, match="line 1"):
        PromptTemplate.from_file(broken)
    with pytest.raises(ValueError, match="does not exist"):
        PromptTemplate.from_file(tmp_path / "missing.j2")


@pytest.mark.parametrize(
    ("arguments", "valid"),
    [
        ({"text": "fine"}, True),
        ({"text": "x" * 300}, True),
        ({"text": "x" * 301}, False),
        ({"text": ""}, False),
        ({"text": "a", "extra": 1}, False),
        ("text", False),
        ({"body": "a"}, False),
    ],
)
def test_reply_tool_arguments_are_checked(arguments: object, valid: bool) -> None:
    assert (reply_call_errors(arguments) == []) is valid


def test_the_yaml_post_data_parses_back_to_the_thread() -> None:
    import yaml

    text = render_mention(THREAD, PromptTemplate.from_file())
    posts = yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])["posts"]
    assert [p["uri"] for p in posts] == [t.uri for t in THREAD]
    assert posts[-1]["text"] == THREAD[-1].text and posts[2]["unavailable"] == "deleted"
