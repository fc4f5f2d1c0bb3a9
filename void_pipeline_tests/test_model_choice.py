"""One model choice: the axolotl config names the model and its sequence length; a dataset built for another
choice is refused with one line per difference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from void_pipeline.lib.model import choose_model, family_of, mismatch, vocabulary_fingerprint
from void_pipeline.lib.settings import from_environment
from void_pipeline.lib.train.axolotl_config import CANDIDATES, load


@pytest.mark.parametrize("config", CANDIDATES)
def test_each_config_names_the_model_it_trains(config: str) -> None:
    chosen = choose_model(config)
    assert chosen.name == load(config)["base_model"] and chosen.weights == chosen.name
    assert chosen.sequence_len == load(config)["sequence_len"]
    assert chosen.family == {"llama": "llama", "mistral": "mistral", "qwen2.5": "qwen"}[config.split("-")[0]]


def test_choosing_qwen_trains_qwen_with_a_local_copy_and_an_override(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    chosen = choose_model("qwen2.5-7b-instruct", ["tiny"], str(tmp_path), 2048)
    assert (chosen.name, chosen.weights, chosen.sequence_len) == ("Qwen/Qwen2.5-7B-Instruct", str(tmp_path), 2048)
    assert chosen.identity()["model_family"] == "qwen" and chosen.identity()["model_config"] == "qwen2.5-7b-instruct"
    # a local copy's config.json decides the family whatever the folder is called
    assert family_of("some/renamed-checkpoint", str(tmp_path)) == "qwen"
    assert family_of("some/renamed-checkpoint") == "other"
    with pytest.raises(
        ValueError, match=r"holds a qwen model, not the llama model axolotl config 'llama-3\.1-8b-instruct'"
    ):
        choose_model("llama-3.1-8b-instruct", [], str(tmp_path))  # a Qwen copy given for Llama: never trained as Llama


def test_an_unknown_config_is_a_settings_problem_and_the_old_variable_is_refused() -> None:
    settings = from_environment({"VOID_TRAINER_CONFIG": "gpt-5", "VOID_BASE_MODEL": "Qwen/Qwen2.5-7B-Instruct"})
    problems = "\n".join(settings.problems)
    assert "no axolotl config 'gpt-5'" in problems and "VOID_BASE_MODEL is no longer read" in problems
    assert settings.trainer_config == "llama-3.1-8b-instruct"  # the location still loads, with the default
    fine = from_environment({"VOID_TRAINER_CONFIG": "qwen2.5-7b-instruct", "VOID_SEQUENCE_LEN": "4096"})
    assert fine.problems == () and (fine.trainer_config, fine.sequence_len) == ("qwen2.5-7b-instruct", 4096)
    assert from_environment({}).sequence_len is None  # the config's


def test_a_dataset_built_for_another_choice_is_refused_line_by_line(corpus_tokenizer: Path, tmp_path: Path) -> None:
    built = choose_model("llama-3.1-8b-instruct", ["tiny"], str(corpus_tokenizer), 4096).identity()
    assert built["vocabulary"] and built["vocabulary"] == vocabulary_fingerprint(corpus_tokenizer)
    same = choose_model("llama-3.1-8b-instruct", ["tiny"], str(corpus_tokenizer), 4096)
    assert mismatch(built, same) == []
    longer = choose_model("llama-3.1-8b-instruct", ["tiny"], str(corpus_tokenizer), 8192)
    assert mismatch(built, longer) == [
        "the dataset was built for sequence_len 4096 and this training uses 8192: rebuild chat_dataset (it takes "
        "sequence_len from the same model choice)"
    ]
    qwen = mismatch(built, choose_model("qwen2.5-7b-instruct", [], None, 4096))
    assert [line.split(" and ")[0] for line in qwen] == [
        "the dataset was built for model family llama",
        "the dataset was built for base model meta-llama/Llama-3.1-8B-Instruct",
    ]
    other = tmp_path / "other"
    other.mkdir()
    vocab = json.loads((corpus_tokenizer / "tokenizer.json").read_text())
    (first, one), (second, two) = sorted(vocab["model"]["vocab"].items(), key=lambda kv: kv[1])[-2:]
    vocab["model"]["vocab"].update({first: two, second: one})  # two tokens trade ids: another tokenizer
    (other / "tokenizer.json").write_text(json.dumps(vocab))
    retokenized = mismatch(built, choose_model("llama-3.1-8b-instruct", ["tiny"], str(other), 4096))
    assert retokenized == [
        "the dataset's token counts come from another tokenizer than the training model's: rebuild chat_dataset"
    ]
