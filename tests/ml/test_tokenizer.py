"""The offline tokenizer: round trip, unknown words, saved with the model."""

from __future__ import annotations

from transformers import PreTrainedTokenizerFast

from generation.ml.tokenizer import MAX_LENGTH, build_tokenizer


def test_caption_round_trips_through_ids():
    tokenizer = build_tokenizer()
    caption = "a red star on a blue background, top left"
    ids = tokenizer(caption).input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a red star on a blue background , top left"


def test_unknown_words_and_odd_text_map_to_unk_without_error():
    tokenizer = build_tokenizer()
    ids = tokenizer("A Zorblax 🦄 over the rainbow, CENTER").input_ids
    assert ids.count(tokenizer.unk_token_id) == 4  # zorblax, the unicorn, over, rainbow
    assert tokenizer.convert_ids_to_tokens(ids[-2]) == "centre"  # American spelling and case folded
    assert tokenizer("").input_ids == [tokenizer.bos_token_id, tokenizer.eos_token_id]


def test_long_text_is_truncated_and_padded_to_the_model_length():
    tokenizer = build_tokenizer()
    batch = tokenizer(["star " * 100, "moon"], padding="max_length", max_length=MAX_LENGTH, truncation=True)
    assert [len(ids) for ids in batch.input_ids] == [MAX_LENGTH, MAX_LENGTH]
    assert batch.input_ids[1][3:] == [tokenizer.pad_token_id] * (MAX_LENGTH - 3)


def test_saved_tokenizer_loads_back_identical(tmp_path):
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    loaded = PreTrainedTokenizerFast.from_pretrained(tmp_path, local_files_only=True)
    text = "two small pink hearts in the bottom right corner, black background"
    assert loaded(text).input_ids == tokenizer(text).input_ids
    assert loaded.model_max_length == MAX_LENGTH and len(loaded) == len(tokenizer)


def test_the_report_names_captions_cut_at_the_encoders_length_and_unknown_words():
    from generation.ml.lora_training import caption_report

    tokenizer = build_tokenizer()
    assert caption_report(tokenizer, ["a red star on a blue background, top left", "two pink hearts"]) is None
    report = caption_report(tokenizer, ["star " * 100, "a Zorblax over the moon", "a red star"])
    assert report.startswith(f"1 of 3 captions are longer than the text encoder's {MAX_LENGTH} tokens and are cut there; ")
    assert report.endswith("2 of the captions' 108 words (2%) are unknown to the base's tokenizer and read as one unknown word each")


def test_the_report_counts_no_unknown_words_where_unknown_is_the_end_of_text(tmp_path):
    """CLIP's tokenizer, SD's: its unknown token is its end-of-text one, which ends every caption."""
    import json

    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "r": 3, "e": 4, "d</w>": 5, "re": 6, "red</w>": 7}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\nr e\nre d</w>\n")
    from generation.ml.lora_training import caption_report

    clip = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), model_max_length=4)
    assert clip.unk_token_id == clip.eos_token_id
    assert caption_report(clip, ["a red", "red a"]) is None
    assert caption_report(clip, ["a red a red"]) == "1 of 1 captions are longer than the text encoder's 4 tokens and are cut there"
