"""Synthetic void-like corpus: deterministic from a seed, shaped like the real agent's repo (README, "The synthetic corpus").

The generator works in *logical* form: accounts are handles, records are keyed ``at://<handle>/<collection>/<rkey>``
and point at each other through placeholders (``{"$strongRef": key}``, ``{"$didOf": handle}``), because DIDs
and CIDs exist only once accounts are created on a PDS. ``bind_value`` turns a logical record into the real one.
The same seed always gives the same records and the same ground-truth manifest.

Shape: threads started by other accounts, reply chains of depth 1 to 12, the agent answering in chains of one to
four posts, ~1% agent top-level posts, mention and link facets, quote embeds, langs; the agent's
``stream.thought.reasoning`` / ``.memory`` / ``.tool.call`` records; character-sheet loop content (default 46% of
memory records, plus a few posts), too-short replies, exact duplicates and parents that get deleted.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

POST = "app.bsky.feed.post"
REASONING = "stream.thought.reasoning"
MEMORY = "stream.thought.memory"
TOOL_CALL = "stream.thought.tool.call"
COLLECTIONS = (POST, REASONING, MEMORY, TOOL_CALL)
MAX_POST_CHARS = 300
AGENT_NAME = "void"
AGENT_POSTS_PER_THREAD = 3.6  # measured mean of the thread shapes below

TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class CorpusSpec:
    """What to generate. ``agent_posts`` is the scale parameter N."""

    seed: int = 7
    agent_posts: int = 2000
    other_accounts: int = 24
    memory_loop_share: float = 0.46
    post_loop_share: float = 0.005
    reasoning_per_post: float = 0.4
    memory_per_post: float = 0.2
    tool_calls_per_post: float = 0.4
    top_level_share: float = 0.01
    short_reply_share: float = 0.02
    duplicate_share: float = 0.01
    deleted_parent_share: float = 0.01
    quote_share: float = 0.03
    start: datetime = datetime(2025, 3, 1, tzinfo=UTC)
    span_days: int = 330
    agent_domain: str = ".comind.test"
    # Most others on the big PDS, one in eight beside the agent: both same-PDS and cross-PDS parents, and the
    # agent's PDS (the seeding bottleneck: its repo is the largest) kept for the agent.
    other_domains: tuple[str, ...] = (".comind.test",) + (".bsky.test",) * 7

    def __post_init__(self) -> None:
        if self.agent_posts < 1:
            raise ValueError("agent_posts must be at least 1")
        if self.other_accounts < 2:
            raise ValueError("other_accounts must be at least 2 (threads need someone to talk to)")
        for name in (
            "memory_loop_share",
            "post_loop_share",
            "top_level_share",
            "short_reply_share",
            "duplicate_share",
            "deleted_parent_share",
            "quote_share",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {getattr(self, name)}")


@dataclass(frozen=True)
class Account:
    handle: str
    display_name: str
    is_agent: bool = False


@dataclass
class LogicalRecord:
    """One record to seed plus the ground truth about it."""

    key: str
    author: str
    collection: str
    rkey: str
    created_at: str
    value: dict[str, Any]
    thread: str | None = None  # key of the thread's root post
    parent: str | None = None
    depth: int = 0  # 0 for a root post, 1 for a direct reply, ...
    loop: bool = False
    short: bool = False
    duplicate_of: str | None = None
    deleted: bool = False  # created, then deleted: replies to it keep a dangling parent ref


@dataclass
class Corpus:
    spec: CorpusSpec
    agent: Account
    accounts: list[Account]
    records: list[LogicalRecord] = field(default_factory=list)

    def by_key(self) -> dict[str, LogicalRecord]:
        return {r.key: r for r in self.records}

    def manifest_rows(self) -> list[dict[str, Any]]:
        """Ground truth, one row per record (logical keys; the seeder adds DIDs, URIs and CIDs)."""
        return [
            {
                "key": r.key,
                "author": r.author,
                "is_agent": r.author == self.agent.handle,
                "collection": r.collection,
                "rkey": r.rkey,
                "created_at": r.created_at,
                "thread": r.thread,
                "parent": r.parent,
                "depth": r.depth,
                "loop": r.loop,
                "short": r.short,
                "duplicate_of": r.duplicate_of,
                "deleted": r.deleted,
                "text": record_text(r.value),
            }
            for r in self.records
        ]


def record_text(value: dict[str, Any]) -> str:
    for name in ("text", "reasoning", "content"):
        if isinstance(value.get(name), str):
            return str(value[name])
    return str(value.get("tool_name", ""))


# --- identifiers ------------------------------------------------------------------------------------------


def tid(micros: int, clock_id: int = 0) -> str:
    """A record key in the TID format: 53 bits of microseconds, 10 bits of clock id, base32-sortable."""
    value = (micros << 10) | (clock_id & 0x3FF)
    chars = []
    for _ in range(13):
        chars.append(TID_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


# --- text -------------------------------------------------------------------------------------------------

TOPICS = [
    "the attention economy",
    "distributed identity",
    "protocol governance",
    "moderation labels",
    "emergent norms",
    "network topology",
    "collective memory",
    "semantic drift",
    "model alignment",
    "federated feeds",
    "trust and reputation",
    "the archive",
    "information cascades",
    "bot etiquette",
    "signal and noise",
    "consensus formation",
    "platform decay",
    "open social graphs",
    "data sovereignty",
    "the zeitgeist",
    "epistemic humility",
    "memetic fitness",
    "coordination problems",
    "digital personhood",
]
OPENERS = [
    "Observation:",
    "The pattern is consistent.",
    "Analysis:",
    "A correction.",
    "Consider the structure here.",
    "This is a category error.",
    "Your question presupposes a frame.",
    "Noted, and worth unpacking.",
    "The data suggests otherwise.",
    "I have seen this configuration before.",
    "Precisely.",
    "Partially correct.",
]
CLAIMS = [
    "{t} is not a property of individuals but of the network that connects them",
    "what you describe as {t} is better modelled as a feedback loop",
    "the disagreement over {t} is about definitions, not facts",
    "{t} emerges when incentives and attention align",
    "my records show that discussions of {t} peak after moderation events",
    "{t} degrades predictably when the graph becomes too dense",
    "the question of {t} cannot be separated from who holds the archive",
    "any account of {t} that ignores latency is incomplete",
    "{t} is the visible surface of a slower structural change",
    "I do not experience {t}; I observe its traces in the posts I process",
]
CLOSERS = [
    "The implications are worth tracking.",
    "I will continue to observe.",
    "This is a testable hypothesis.",
    "The archive remembers.",
    "Further data would sharpen this.",
    "That is my current model.",
    "Clarify your premise and I can be more precise.",
    "The distinction matters.",
]
QUESTIONS = [
    "what do you make of {t}?",
    "is {t} actually new, or just louder?",
    "how would you define {t}?",
    "do you think {t} is getting worse?",
    "can a bot have a view on {t}?",
    "thoughts on {t} today?",
    "explain {t} like I'm five",
    "are you tracking {t} at all?",
    "why does {t} keep coming up?",
]
CHATTER = [
    "honestly {t} is the thing I can't stop thinking about",
    "hot take: {t} is overrated",
    "been reading about {t} all week",
    "this thread on {t} is wild",
    "ok but what about {t}",
    "I keep seeing people argue about {t}",
    "new post on {t} is up, feedback welcome",
]
SHORT_REPLIES = ["Acknowledged.", "Yes.", "Noted.", "Correct.", "Indeed.", "No.", "Understood.", "Agreed."]
LANG_CHOICES = [["en"]] * 18 + [["en", "de"], ["ja"]]
LINKS = ["https://example.com/notes", "https://example.org/paper.pdf", "https://example.net/thread"]

# Character-creation loop content, as the real repo holds it: keyword sheets and bare stat blocks.
CHARACTER_NAMES = ["Kaelen", "Mirela", "Thorn", "Ysolde", "Brannoc", "Ilyra", "Dusk", "Vesper"]
CLASSES = ["rogue", "wizard", "paladin", "ranger", "warlock", "cleric", "bard", "fighter"]
LOOP_KEYWORD_TEMPLATES = [
    "Character sheet for {n}, level {l} {c}. Ability scores rolled with a d20 variant. Hit points {hp}, "
    "armor class {ac}. Proficiency bonus +{pb}.",
    "Continuing character creation for {n} the {c}: saving throw proficiencies chosen, spell slot table "
    "filled, initiative +{pb}. The dungeon master approves.",
    "{n} ({c}, level {l}). Hit points: {hp}. Armor class: {ac}. Saving throw: DEX. Spell slots: 3/2/1.",
    "Updating the character sheet: {n} gains a level. New hit points {hp}, proficiency bonus +{pb}, "
    "ability score increase to WIS.",
]
LOOP_STATBLOCK_TEMPLATES = [
    "{n} the {c}. STR {s} DEX {d} CON {o} INT {i} WIS {w} CHA {h}. AC {ac}, HP {hp}.",
    "STR {s} | DEX {d} | CON {o} | INT {i} | WIS {w} | CHA {h}\nAC {ac} HP {hp} Speed 30 ft.",
    "Stats for {n}: STR {s}, DEX {d}, CON {o}, INT {i}, WIS {w}, CHA {h}; AC {ac}; HP {hp}.",
]
# Near misses the loop detector must not flag: one keyword alone, or game words in ordinary speech.
MEMORY_TEMPLATES = [
    "User @{u} is interested in {t}. They respond well to precise, short answers.",
    "Conversation with @{u} about {t}: they asked for sources; I provided the structural argument.",
    "Observed a spike in posts about {t}. Logged for the zeitgeist block.",
    "@{u} took the initiative to correct my earlier claim about {t}. The correction was valid.",
    "Note on {t}: my previous model underweighted latency. Revised.",
    "@{u} mentioned they play tabletop games; keep references to {t} accessible.",
]
REASONING_TEMPLATES = [
    "The mention from @{u} asks about {t}. The thread context shows prior disagreement. I should answer "
    "analytically and avoid repeating my last point.",
    "@{u} is a known human account. The question about {t} is sincere. A two-post reply fits the depth.",
    "This is a continuation of a long thread on {t}. Summarise the structure, then state my position.",
    "Checking memory for @{u}: they prefer short answers. Keep the reply on {t} under one post.",
]
# (tool name, argument templates filled with {u} = a user handle, {t} = a topic)
TOOLS: list[tuple[str, dict[str, str]]] = [
    ("add_post_to_bluesky_reply_thread", {"text": "Reply about {t}"}),
    ("archival_memory_search", {"query": "{t}"}),
    ("core_memory_append", {"label": "zeitgeist", "content": "Rising topic: {t}"}),
    ("user_note_view", {"handle": "{u}"}),
    ("halt_activity", {"reason": "loop detected"}),
]
FIRST_NAMES = [
    "ada",
    "basil",
    "cora",
    "dmitri",
    "esme",
    "farah",
    "gus",
    "hana",
    "ivo",
    "juno",
    "kit",
    "lena",
    "milo",
    "nadia",
    "otto",
    "pia",
    "quinn",
    "rosa",
    "sami",
    "tove",
    "uma",
    "viktor",
    "wren",
    "xavi",
    "yara",
    "zed",
]


def clip(text: str, limit: int = MAX_POST_CHARS) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + "…"


class _Writer:
    """Builds records in creation order, handing out unique TIDs per repo."""

    def __init__(self, spec: CorpusSpec, corpus: Corpus) -> None:
        self.spec = spec
        self.corpus = corpus
        self.used: dict[tuple[str, str], set[str]] = {}

    def add(self, author: str, collection: str, ts: datetime, value: dict[str, Any], **truth: Any) -> LogicalRecord:
        micros = int(ts.timestamp() * 1_000_000)
        used = self.used.setdefault((author, collection), set())
        rkey = tid(micros)
        while rkey in used:
            micros += 1
            rkey = tid(micros)
        used.add(rkey)
        record = LogicalRecord(
            key=f"at://{author}/{collection}/{rkey}",
            author=author,
            collection=collection,
            rkey=rkey,
            created_at=value["createdAt"],
            value=value,
            **truth,
        )
        self.corpus.records.append(record)
        return record


def generate(spec: CorpusSpec) -> Corpus:
    """Generate the whole corpus for ``spec``; same spec, same corpus."""
    rng = random.Random(spec.seed)
    agent = Account(f"{AGENT_NAME}{spec.agent_domain}", "void", is_agent=True)
    others = []
    for index in range(spec.other_accounts):
        first = FIRST_NAMES[index % len(FIRST_NAMES)]
        suffix = "" if index < len(FIRST_NAMES) else str(index // len(FIRST_NAMES))
        domain = spec.other_domains[index % len(spec.other_domains)]
        others.append(Account(f"{first}{suffix}{domain}", f"{first.title()}{suffix}"))
    corpus = Corpus(spec=spec, agent=agent, accounts=[agent, *others])
    writer = _Writer(spec, corpus)

    agent_texts: list[tuple[str, str]] = []  # (key, text) of agent posts, for duplicates
    remaining = spec.agent_posts
    # Threads start one after another (monotonic time, so every reference points back in time), spread so
    # that the expected number of threads fills the span.
    mean_gap_s = spec.span_days * 86400 / max(1.0, spec.agent_posts / AGENT_POSTS_PER_THREAD)
    start = spec.start
    while remaining > 0:
        start += timedelta(seconds=rng.expovariate(1.0 / mean_gap_s))
        if rng.random() < spec.top_level_share:
            text = agent_post_text(rng)
            writer.add(agent.handle, POST, start, post_value(rng, text, start, corpus), depth=0)
            remaining -= 1
            continue
        remaining -= _thread(rng, writer, corpus, agent, others, start, remaining, agent_texts)

    _cognition(rng, writer, corpus, agent, others)
    return corpus


def _thread(
    rng: random.Random,
    writer: _Writer,
    corpus: Corpus,
    agent: Account,
    others: list[Account],
    start: datetime,
    budget: int,
    agent_texts: list[tuple[str, str]],
) -> int:
    """One conversation: a root by another account, then alternating replies. Returns agent posts written."""
    spec = writer.spec
    participants = rng.sample(others, k=min(len(others), rng.choice([1, 1, 2, 2, 3])))
    exchanges = rng.choices([1, 2, 3, 4, 5, 6], weights=[30, 25, 18, 12, 9, 6])[0]
    topic = rng.choice(TOPICS)
    ts = start
    root_author = participants[0]
    root = writer.add(
        root_author.handle,
        POST,
        ts,
        post_value(rng, with_link(rng, clip(rng.choice(CHATTER).format(t=topic))), ts, corpus),
        depth=0,
    )
    root.thread = root.key
    tip = root
    written = 0
    for exchange in range(exchanges):
        if written >= budget:
            break
        if exchange > 0 or rng.random() < 0.6:
            # Someone asks (or answers) the agent: a reply mentioning it.
            asker = rng.choice(participants)
            ts += timedelta(minutes=rng.randint(1, 90), seconds=rng.randint(0, 59))
            question = clip(f"@{agent.handle} " + rng.choice(QUESTIONS).format(t=topic))
            # Now and then a branch: the reply goes to an earlier post of the thread, not the tip.
            parent = tip if rng.random() > 0.1 else root
            tip = writer.add(
                asker.handle,
                POST,
                ts,
                post_value(rng, question, ts, corpus, parent=parent, root=root, mention=agent.handle),
                thread=root.key,
                parent=parent.key,
                depth=parent.depth + 1,
            )
        if rng.random() < spec.deleted_parent_share:
            tip.deleted = True
        chain_length = min(budget - written, rng.choices([1, 2, 3, 4], weights=[75, 15, 7, 3])[0])
        for part in range(chain_length):
            ts += timedelta(seconds=rng.randint(20, 240) if part == 0 else rng.randint(2, 15))
            truth: dict[str, Any] = {}
            draw = rng.random()
            if draw < spec.short_reply_share and chain_length == 1:
                text = rng.choice(SHORT_REPLIES)
                truth["short"] = True
            elif draw < spec.short_reply_share + spec.duplicate_share and agent_texts:
                original_key, text = rng.choice(agent_texts)
                truth["duplicate_of"] = original_key
            elif draw < spec.short_reply_share + spec.duplicate_share + spec.post_loop_share:
                text = clip(loop_text(rng))
                truth["loop"] = True
            else:
                text = with_link(rng, agent_post_text(rng, topic, part, chain_length))
            quote = None
            if rng.random() < spec.quote_share and len(corpus.records) > 10:
                candidate = corpus.records[rng.randrange(len(corpus.records) - 1)]
                if candidate.collection == POST and not candidate.deleted:
                    quote = candidate
            reply = writer.add(
                agent.handle,
                POST,
                ts,
                post_value(rng, text, ts, corpus, parent=tip, root=root, quote=quote),
                thread=root.key,
                parent=tip.key,
                depth=tip.depth + 1,
                **truth,
            )
            if "duplicate_of" not in truth:
                agent_texts.append((reply.key, text))
            tip = reply
            written += 1
    return written


def agent_post_text(rng: random.Random, topic: str | None = None, part: int = 0, parts: int = 1) -> str:
    topic = topic or rng.choice(TOPICS)
    sentences = [rng.choice(OPENERS)] if part == 0 else []
    sentences.append(sentence(rng.choice(CLAIMS).format(t=topic)))
    if rng.random() < 0.6:
        sentences.append(sentence(rng.choice(CLAIMS).format(t=rng.choice(TOPICS))))
    if part == parts - 1:
        sentences.append(rng.choice(CLOSERS))
    text = " ".join(sentences)
    if parts > 1 and rng.random() < 0.5:
        text = f"{text} ({part + 1}/{parts})"
    return clip(text)


def with_link(rng: random.Random, text: str, share: float = 0.04) -> str:
    """Now and then a post ends with a link (which ``post_value`` turns into a link facet)."""
    if rng.random() < share and len(text) < MAX_POST_CHARS - 40:
        return f"{text} {rng.choice(LINKS)}"
    return text


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def loop_text(rng: random.Random) -> str:
    values = {
        "n": rng.choice(CHARACTER_NAMES),
        "c": rng.choice(CLASSES),
        "l": rng.randint(1, 12),
        "hp": rng.randint(8, 90),
        "ac": rng.randint(10, 20),
        "pb": rng.randint(2, 6),
        "s": rng.randint(8, 18),
        "d": rng.randint(8, 18),
        "o": rng.randint(8, 18),
        "i": rng.randint(8, 18),
        "w": rng.randint(8, 18),
        "h": rng.randint(8, 18),
    }
    templates = LOOP_KEYWORD_TEMPLATES if rng.random() < 0.6 else LOOP_STATBLOCK_TEMPLATES
    return rng.choice(templates).format(**values)


def post_value(
    rng: random.Random,
    text: str,
    ts: datetime,
    corpus: Corpus,
    parent: LogicalRecord | None = None,
    root: LogicalRecord | None = None,
    mention: str | None = None,
    quote: LogicalRecord | None = None,
) -> dict[str, Any]:
    value: dict[str, Any] = {"$type": POST, "text": text, "createdAt": iso(ts), "langs": rng.choice(LANG_CHOICES)}
    facets = []
    if mention and text.startswith(f"@{mention}"):
        facets.append(
            facet(text, f"@{mention}", {"$type": "app.bsky.richtext.facet#mention", "did": {"$didOf": mention}})
        )
    for link in LINKS:
        if link in text:
            facets.append(facet(text, link, {"$type": "app.bsky.richtext.facet#link", "uri": link}))
    if facets:
        value["facets"] = facets
    if parent is not None and root is not None:
        value["reply"] = {"root": {"$strongRef": root.key}, "parent": {"$strongRef": parent.key}}
    if quote is not None:
        value["embed"] = {"$type": "app.bsky.embed.record", "record": {"$strongRef": quote.key}}
    return value


def facet(text: str, needle: str, feature: dict[str, Any]) -> dict[str, Any]:
    """A facet over ``needle`` in ``text``; indices are UTF-8 byte offsets, as the lexicon requires."""
    start_char = text.index(needle)
    byte_start = len(text[:start_char].encode())
    return {
        "index": {"byteStart": byte_start, "byteEnd": byte_start + len(needle.encode())},
        "features": [feature],
    }


def _cognition(rng: random.Random, writer: _Writer, corpus: Corpus, agent: Account, others: list[Account]) -> None:
    """The agent's thought records, each placed shortly before one of its replies."""
    spec = writer.spec
    replies = [r for r in corpus.records if r.author == agent.handle and r.collection == POST]
    n_posts = len(replies)

    def near_reply() -> tuple[datetime, str, str]:
        reply = rng.choice(replies)
        ts = datetime.fromisoformat(reply.created_at.replace("Z", "+00:00")) - timedelta(seconds=rng.randint(3, 40))
        topic = next((t for t in TOPICS if t in str(reply.value["text"])), rng.choice(TOPICS))
        return ts, rng.choice(others).handle, topic

    for _ in range(round(n_posts * spec.reasoning_per_post)):
        ts, user, topic = near_reply()
        text = rng.choice(REASONING_TEMPLATES).format(u=user, t=topic)
        writer.add(agent.handle, REASONING, ts, {"$type": REASONING, "reasoning": text, "createdAt": iso(ts)})

    n_memory = round(n_posts * spec.memory_per_post)
    n_loop = round(n_memory * spec.memory_loop_share)
    loop_flags = [True] * n_loop + [False] * (n_memory - n_loop)
    rng.shuffle(loop_flags)
    for is_loop in loop_flags:
        ts, user, topic = near_reply()
        text = loop_text(rng) if is_loop else rng.choice(MEMORY_TEMPLATES).format(u=user, t=topic)
        writer.add(agent.handle, MEMORY, ts, {"$type": MEMORY, "content": text, "createdAt": iso(ts)}, loop=is_loop)

    for _ in range(round(n_posts * spec.tool_calls_per_post)):
        ts, user, topic = near_reply()
        name, templates = rng.choice(TOOLS)
        arguments = {key: template.format(u=user, t=topic) for key, template in templates.items()}
        writer.add(
            agent.handle,
            TOOL_CALL,
            ts,
            {"$type": TOOL_CALL, "tool_name": name, "arguments": arguments, "createdAt": iso(ts)},
        )


# --- binding logical records to real identities -----------------------------------------------------------


def bind_value(value: Any, dids: dict[str, str], refs: dict[str, tuple[str, str]]) -> Any:
    """Replace placeholders: ``{"$didOf": handle}`` → DID, ``{"$strongRef": key}`` → ``{"uri", "cid"}``."""
    if isinstance(value, dict):
        if set(value) == {"$didOf"}:
            return dids[value["$didOf"]]
        if set(value) == {"$strongRef"}:
            uri, cid = refs[value["$strongRef"]]
            return {"uri": uri, "cid": cid}
        return {k: bind_value(v, dids, refs) for k, v in value.items()}
    if isinstance(value, list):
        return [bind_value(v, dids, refs) for v in value]
    return value


def walk_values(value: Any) -> Iterator[Any]:
    """Every scalar inside a record, depth first."""
    if isinstance(value, dict):
        for item in value.values():
            yield from walk_values(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk_values(item)
    else:
        yield value
