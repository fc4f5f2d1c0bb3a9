"""The mention prompt as void's handler renders it (lib/curate/handler.py): the thread YAML checked against text
derived by hand from the handler's algorithm, operator templates in either syntax, and the reply tool's contract."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from void_pipeline.lib.curate.handler import ThreadPost, post_item, thread_yaml, visible_thread
from void_pipeline.lib.curate.prompt import PromptTemplate, mention_variables, render_mention
from void_pipeline.lib.curate.reply_tool import reply_call_errors
from void_pipeline.testworld.corpus import Corpus, record_text

MENTION_RECORD = {
    "$type": "app.bsky.feed.post",
    "text": "@void.comind.test so what changes at scale?",
    "createdAt": "2025-06-01T10:09:00.000Z",
    "langs": ["en"],
    "facets": [
        {
            "index": {"byteStart": 0, "byteEnd": 17},
            "features": [{"$type": "app.bsky.richtext.facet#mention", "did": "did:plc:void"}],
        }
    ],
    "reply": {
        "root": {"uri": "at://did:plc:aaa/app.bsky.feed.post/3kroot", "cid": "bafyroot"},
        "parent": {"uri": "at://did:plc:void/app.bsky.feed.post/3kvoid", "cid": "bafyvoid"},
    },
}
THREAD = [
    ThreadPost("at://did:plc:bbb/app.bsky.feed.post/3kgone", None, "did:plc:bbb", None, None, False, "deleted"),
    ThreadPost(
        "at://did:plc:aaa/app.bsky.feed.post/3kroot",
        "ada.bsky.test",
        "did:plc:aaa",
        "is federated moderation actually new, or just louder?",
        "2025-06-01T10:00:00.000Z",
        cid="bafyroot",
    ),
    ThreadPost(
        "at://did:plc:void/app.bsky.feed.post/3kvoid",
        "void.comind.test",
        "did:plc:void",
        "Partially correct. The mechanisms are old; the scale is new.",
        "2025-06-01T10:02:00.000Z",
        display_name="void",
    ),
    ThreadPost(
        "at://did:plc:aaa/app.bsky.feed.post/3kask",
        "ada.bsky.test",
        "did:plc:aaa",
        MENTION_RECORD["text"],  # type: ignore[arg-type]
        "2025-06-01T10:09:00.000Z",
        display_name="Ada",
        cid="bafyask",
        record_json=json.dumps(MENTION_RECORD),
    ),
]
# Derived by hand from the handler: the deleted post ends what getPostThread shows (the chain starts after it);
# uri, cid, indexed_at, created_at, langs, py_type and reply.root are stripped, reply.parent keeps nothing and goes
# with reply; keys sorted; the mention feature keeps its did; '@' cannot start a plain YAML scalar.
EXPECTED_YAML = """posts:
- author:
    did: did:plc:aaa
    handle: ada.bsky.test
  record:
    text: is federated moderation actually new, or just louder?
- author:
    did: did:plc:void
    display_name: void
    handle: void.comind.test
  record:
    text: Partially correct. The mechanisms are old; the scale is new.
- author:
    did: did:plc:aaa
    display_name: Ada
    handle: ada.bsky.test
  record:
    facets:
    - features:
      - did: did:plc:void
      index:
        byte_end: 17
        byte_start: 0
    text: '@void.comind.test so what changes at scale?'
"""
EXPECTED_PROMPT = (
    "A Bluesky post from @ada.bsky.test (Ada) mentions you.\n\nTHE POST TO ANSWER:\n"
    '"@void.comind.test so what changes at scale?"\n\nTHE THREAD UP TO IT:\n```yaml\n'
    + EXPECTED_YAML
    + "\n```\n\nTo answer, call add_post_to_bluesky_reply_thread: each call posts one reply of at most 300 characters,"
    " and more calls continue the thread in order. Make no call to stay silent."
)


def test_the_thread_yaml_is_the_handlers() -> None:
    assert thread_yaml(THREAD) == EXPECTED_YAML
    variables = mention_variables(THREAD)
    assert variables["author_name"] == "Ada" and variables["mention_text"] == MENTION_RECORD["text"]
    assert variables["thread_context"] == variables["yaml_thread_data"] == EXPECTED_YAML


def test_the_default_template_has_the_handlers_structure_in_our_words() -> None:
    assert render_mention(THREAD, PromptTemplate.from_file()) == EXPECTED_PROMPT


def test_without_a_display_name_the_handle_stands_in_and_a_link_facet_keeps_only_its_index() -> None:
    record = {**MENTION_RECORD, "facets": [{"index": {"byteStart": 1, "byteEnd": 5}, "features": [
        {"$type": "app.bsky.richtext.facet#link", "uri": "https://example.com"}]}]}  # fmt: skip
    mention = ThreadPost("at://did:plc:ccc/app.bsky.feed.post/3k1", "cy.test", "did:plc:ccc", "hey there",
                         "2025-06-01T10:00:00Z", record_json=json.dumps(record))  # fmt: skip
    assert mention_variables([mention])["author_name"] == "cy.test"
    # the link's uri is stripped; an emptied item of a list stays, as the handler leaves it
    assert thread_yaml([mention]).endswith(
        "  record:\n    facets:\n    - features:\n      - {}\n      index:\n        byte_end: 5\n        byte_start: 1\n"
        "    text: '@void.comind.test so what changes at scale?'\n"
    )


def test_the_visible_thread_stops_at_a_missing_parent_and_shows_forty_parents() -> None:
    posts = [
        ThreadPost(f"at://did:plc:a/app.bsky.feed.post/{i}", "a.test", "did:plc:a", f"p{i}", None) for i in range(60)
    ]
    assert visible_thread(posts) == posts[-41:]
    gone = ThreadPost("at://did:plc:b/app.bsky.feed.post/x", None, "did:plc:b", None, None, False, "blocked")
    assert visible_thread([*posts[:3], gone, *posts[3:6]]) == posts[3:6]


def test_per_post_items_join_to_the_same_text_as_one_dump() -> None:
    rng = random.Random(5)
    alphabet = "abc xyz:#@'\"-?\n\té漢😀"
    for _ in range(50):
        thread = [
            ThreadPost(
                f"at://did:plc:{i}/app.bsky.feed.post/{i}",
                f"h{i}.test",
                f"did:plc:{i}",
                "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120))),
                None,
                display_name=rng.choice([None, "", "Name: x", "漢字"]),
            )
            for i in range(rng.randint(1, 5))
        ]
        whole = yaml.dump(
            {"posts": [yaml.safe_load(post_item(p))[0] for p in thread]},
            indent=2,
            allow_unicode=True,
            default_flow_style=False,
        )
        assert thread_yaml(thread) == whole


def test_an_operator_template_in_the_handlers_syntax_fills_every_placeholder(tmp_path: Path) -> None:
    handler_style = tmp_path / "handler_prompt.txt"
    handler_style.write_text(
        'From @{author_handle} ({author_name}):\n"{mention_text}"\n```yaml\n{thread_context}\n```\n'
        "{yaml_thread_data}|{tree_view}\n"
    )
    template = PromptTemplate.from_file(handler_style)
    text = render_mention(THREAD, template)
    assert template.syntax == "format" and "{" not in text.replace("{}", "")
    assert text.startswith('From @ada.bsky.test (Ada):\n"@void.comind.test so what changes at scale?"\n```yaml\n')
    assert text.count(EXPECTED_YAML) == 2 and "└─ @void.comind.test (void): Partially correct." in text
    assert not text.endswith("\n")  # the file's final newline is the editor's, not the prompt's
    jinja = tmp_path / "mention.j2"
    jinja.write_text("@{{ author_handle }}: {{ mention_text }}\n{{ thread_context }}")
    assert render_mention(THREAD, PromptTemplate.from_file(jinja)).startswith("@ada.bsky.test: @void.comind.test so")
    # a format string's escaped braces are text, not Jinja2: the suffix decides
    braces = tmp_path / "with_json.txt"
    braces.write_text('Reply as {{"text": "..."}} to {mention_text}\n{thread_context}')
    assert render_mention(THREAD, PromptTemplate.from_file(braces)).startswith('Reply as {"text": "..."} to @void')


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("{author_handle} {mention_text} {thread_context} {post_text}", "unknown placeholder post_text"),
        ("{{ mention_text }} {{ thread_yaml }}", "unknown placeholder thread_yaml"),
        ("{author_handle} {thread_context}", "never shows the mention text"),
        ("{{ author_name }}: {{ mention_text }}", "never shows the thread"),
        ("{mention_text} {thread_context} {0}", "positional placeholder"),
        ("{mention_text} {thread_context} {", "literal brace"),
        ("{% if %}", "line 1"),
    ],
)
def test_a_broken_template_names_the_problem_and_the_file(tmp_path: Path, source: str, problem: str) -> None:
    path = tmp_path / "operator_template"  # no suffix: the syntax is read from the text
    path.write_text(source)
    with pytest.raises(ValueError, match=problem) as refused:
        PromptTemplate.from_file(path)
    assert str(path) in str(refused.value)


def test_a_template_that_ignores_the_thread_makes_no_dataset(tmp_path: Path) -> None:
    import polars as pl

    from void_pipeline.lib.curate.dataset import build_examples

    path = tmp_path / "constant.j2"
    path.write_text("{% if mention_text and thread_context %}always the same{% endif %}")
    replies = [
        (f"at://did:plc:void/app.bsky.feed.post/r{i}", f"at://did:plc:u{i}/app.bsky.feed.post/p{i}") for i in range(2)
    ]
    posts = pl.DataFrame({"uri": [r for r, _ in replies], "text_norm": ["an answer", "another answer"],
                          "created_at": [datetime(2025, 1, 1, tzinfo=UTC)] * 2, "reply_parent_uri": [p for _, p in replies],
                          "reply_root_uri": [p for _, p in replies]})  # fmt: skip
    ancestors = [[{"uri": p, "author_did": p.split("/")[2], "author_handle": f"u{i}.test", "text": f"question {i}",
                   "available": True}] for i, (_, p) in enumerate(replies)]  # fmt: skip
    context = pl.DataFrame({"uri": [r for r, _ in replies], "ancestors": ancestors})
    with pytest.raises(ValueError, match="renders the same prompt for all 2 examples of 2 threads"):
        build_examples(posts, context, PromptTemplate.from_file(path), "did:plc:void", "void.test")
    with pytest.raises(ValueError, match="does not exist"):
        PromptTemplate.from_file(tmp_path / "missing.txt")


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


def test_the_text_only_shortcut_gives_what_the_sdk_path_gives() -> None:
    from void_pipeline.lib.curate.handler import plain, post_data, post_view, pruned

    rng = random.Random(9)
    for i in range(300):
        record: dict[str, object] = {
            "$type": "app.bsky.feed.post",
            "text": rng.choice(["", " ", "hi", "a: b #c", "漢字 😀"]),
        }
        if rng.random() < 0.5:
            record["createdAt"] = "2025-01-01T00:00:00Z"
        if rng.random() < 0.5:
            record["langs"] = rng.choice([["en"], []])
        if rng.random() < 0.5:
            ref = {"uri": "at://did:plc:a/app.bsky.feed.post/1", "cid": "bafy"}
            record["reply"] = {"root": ref, "parent": ref}
        if rng.random() < 0.3:
            record["tags"] = ["x"]
        post = ThreadPost(f"at://did:plc:a/app.bsky.feed.post/{i}", "a.test", "did:plc:a", str(record["text"]),
                          None, display_name=rng.choice([None, "", " ", "Ada"]), record_json=json.dumps(record))  # fmt: skip
        assert post_data(post) == pruned(plain(post_view(post))), record


def test_the_direct_yaml_writer_is_byte_equal_to_pyyaml_where_it_writes(corpus: Corpus) -> None:
    """lib/curate/handler_yaml.py against yaml.dump: random nested posts, the corpus' texts, and texts built to fold
    at awkward places (long words, quotes and URLs at column 80). It must also write most posts itself."""
    from void_pipeline.lib.curate.handler_yaml import list_item

    def reference(data: dict[str, object]) -> str:
        return str(yaml.dump([data], indent=2, allow_unicode=True, default_flow_style=False))

    rng = random.Random(11)
    keys = [
        "text",
        "did",
        "handle",
        "display_name",
        "record",
        "facets",
        "features",
        "index",
        "byte_end",
        "alt",
        "title",
    ]
    alphabets = [
        "abcdefgh ijk lmn. opq, rs? tu!'",
        "abc 😀 é 漢字 \"q\" 'x' : - #tag @h.test https://x.y/z",
        "yes no true 12 ~ @ ' : #",
    ]

    def text() -> str:
        alphabet = rng.choice(alphabets)
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, rng.choice([5, 40, 300]))))

    def mapping(depth: int = 0) -> dict[str, object]:
        data: dict[str, object] = {}
        for key in rng.sample(keys, rng.randint(0, 5)):
            roll = rng.random()
            if depth < 3 and roll < 0.2:
                data[key] = mapping(depth + 1)
            elif depth < 3 and roll < 0.3:
                data[key] = [mapping(depth + 1) if rng.random() < 0.8 else {} for _ in range(rng.randint(0, 3))]
            elif roll < 0.4:
                data[key] = rng.randint(0, 5000)
            else:
                data[key] = text()
        return data

    words = [
        "a",
        "bb",
        "https://example.com/a/long/path",
        "it's",
        "'quoted'",
        "end.",
        "@h.test",
        "漢字",
        "😀",
        "x" * 90,
    ]
    words += ["yes", "Yes", "NO", "on", "Off", "true", "False", "null", "y", "N", "The", "ok", "a:b", "#t", "2.5", "~"]
    cases = [mapping() for _ in range(3000)]
    cases += [
        {"record": {"text": " ".join(rng.choice(words) for _ in range(rng.choice([1, 2, 60])))}} for _ in range(4000)
    ]
    posts = [record_text(r.value) for r in corpus.records if r.collection == "app.bsky.feed.post"]
    cases += [
        {"author": {"did": "did:plc:a", "display_name": "Ada", "handle": "a.test"}, "record": {"text": t}}
        for t in posts
    ]
    written = 0
    for data in cases:
        mine = list_item(data)
        if mine is not None:
            written += 1
            assert mine == reference(data), data
    corpus_written = sum(list_item({"record": {"text": t}}) is not None for t in posts)
    assert written > len(cases) // 3 and corpus_written > 0.9 * len(posts)


def test_printable_is_yamls_printable_at_every_boundary() -> None:
    from void_pipeline.lib.curate.handler_yaml import printable

    def yaml_printable(ch: str) -> bool:  # YAML 1.1's printable set as PyYAML checks it with allow_unicode, less BOM
        return (" " <= ch <= "~" or "\xa0" <= ch <= "\ud7ff" or "\ue000" <= ch <= "\ufffd" or ch >= "\U00010000") and (
            ch != "\ufeff"
        )

    boundaries = [0x00, 0x09, 0x0A, 0x1F, 0x20, 0x7E, 0x7F, 0x85, 0x9F, 0xA0, 0xD7FF, 0xD800, 0xDFFF, 0xE000]
    boundaries += [0xFEFE, 0xFEFF, 0xFF00, 0xFFFD, 0xFFFE, 0xFFFF, 0x10000, 0x1F600, 0x10FFFF]
    assert [printable(chr(cp)) for cp in boundaries] == [yaml_printable(chr(cp)) for cp in boundaries]


def test_each_posts_item_is_pyyamls_dump_of_what_the_handler_keeps(corpus: Corpus) -> None:
    """post_item's shortcuts (an author's lines written once, the text written directly) against yaml.dump of the
    pruned post, for posts of every shape: text only, blank, odd display names, records with facets or embeds."""
    from void_pipeline.lib.curate.handler import post_data

    rng = random.Random(13)
    texts = [record_text(r.value) for r in corpus.records if r.collection == "app.bsky.feed.post"][:400]
    texts += ["", " ", "yes", "12 monkeys", "a: b", "it's 'quoted'", "line\nbreak", "tab\there", "x" * 95 + " y"]
    texts += [" ".join(rng.choice(["word", "it's", "#tag", "漢字", "https://x.y/" + "z" * 70]) for _ in range(40))]
    names = [None, "", " ", "Ada", "Ada: the first", "no", "漢字", "'q'"]
    extras: list[dict[str, object]] = [
        {},
        {"langs": ["en"]},
        {"facets": [{"index": {"byteStart": 0, "byteEnd": 3}, "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": "x"}]}]},
        {"embed": {"$type": "app.bsky.embed.external", "external": {"uri": "https://x.y", "title": "T", "description": ""}}},
    ]  # fmt: skip
    shortcut = 0
    for i, text in enumerate(texts):
        extra = rng.choice(extras)
        record = {"$type": "app.bsky.feed.post", "text": text, "createdAt": "2025-01-01T00:00:00Z", **extra}
        post = ThreadPost(f"at://did:plc:a/app.bsky.feed.post/{i}", rng.choice(["a.test", "yes.test"]), "did:plc:a",
                          text, None, display_name=rng.choice(names),
                          record_json=rng.choice([None, json.dumps(record)]) if not extra else json.dumps(record))  # fmt: skip
        expected = yaml.dump([post_data(post)], indent=2, allow_unicode=True, default_flow_style=False)
        assert post_item(post) == expected, post
        shortcut += set(extra) <= {"langs"}
    assert shortcut > len(texts) // 3
