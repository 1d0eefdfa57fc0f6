import numpy as np
import pytest
import torch

from radscale.errors import RadscaleError
from radscale.evaluate.report_gen import (HFDecoderConfig, SmallDecoderConfig, WordVocab, beam_search,
                                          evaluate_report_generation, fit_report_generator, prefix_inputs,
                                          report_section)
from radscale.evaluate.text_metrics import tokenize

TEMPLATES = (
    "FINDINGS: Right pleural effusion. No pneumothorax.\n\nIMPRESSION: Pleural effusion.",
    "FINDINGS: Large left pneumothorax. No pleural effusion.\n\nIMPRESSION: Pneumothorax.",
    "FINDINGS: The heart is enlarged. The lungs are clear.\n\nIMPRESSION: Cardiomegaly.",
)
COLUMNS = {"task", "domain", "metric", "label", "value", "ci_lo", "ci_hi", "n_test", "n_labels", "replicates"}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models: thread hand-offs cost more than they save, badly so on a loaded 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _data(n, rng, signal=True):
    """Report class k is written in CLS dimension k (an encoder that 'sees' the finding); patches are noise."""
    cls_id = rng.integers(0, 3, n)
    cls = rng.normal(0, 0.3, (n, 12)).astype(np.float32)
    if signal:
        cls[np.arange(n), cls_id] += 3.0
    feats = {"cls": cls, "patch": rng.normal(size=(n, 16, 12)).astype(np.float32)}
    return feats, [TEMPLATES[k] for k in cls_id]


def test_word_vocab_round_trip_and_unknown_words():
    vocab = WordVocab.build(TEMPLATES, min_count=1)
    ids = vocab.encode(TEMPLATES[0])
    assert vocab.decode(ids) == "findings: right pleural effusion. no pneumothorax. impression: pleural effusion."
    assert tokenize(vocab.decode(ids)) == tokenize(TEMPLATES[0])
    assert vocab.encode("effusion xyzzy") == [vocab.index["effusion"], vocab.unk_id]
    assert "xyzzy" not in vocab.decode(vocab.encode("effusion xyzzy"))
    assert "heart" not in WordVocab.build(TEMPLATES, min_count=2).index     # seen once only


def test_prefix_inputs_pool_patch_bands():
    feats = {"cls": np.zeros((2, 3), np.float32), "patch": np.arange(2 * 8 * 3, dtype=np.float32).reshape(2, 8, 3)}
    x = prefix_inputs(feats, 4)
    assert x.shape == (2, 5, 3)
    assert np.allclose(x[:, 1], feats["patch"][:, :2].mean(1)) and np.allclose(x[:, 4], feats["patch"][:, 6:].mean(1))
    assert prefix_inputs(np.ones((2, 6)), 4).shape == (2, 1, 6)
    with pytest.raises(RadscaleError, match="bands"):
        prefix_inputs(feats, 9)


def test_small_decoder_learns_reports_from_features_not_from_noise():
    rng = np.random.default_rng(0)
    tr, tr_r = _data(60, rng)
    va, va_r = _data(15, rng)
    te, te_r = _data(24, rng)
    cfg = SmallDecoderConfig(width=64, layers=2, heads=4, dropout=0.0, lr=1e-2, min_count=1)
    gen = fit_report_generator(tr, tr_r, va, va_r, decoder=cfg, epochs=15, seed=0, patience=15, max_len=32)
    assert gen.val_loss[gen.best_epoch - 1] == min(gen.val_loss) < gen.val_loss[0]
    out = gen.generate(te)
    assert np.mean([tokenize(o) == tokenize(r) for o, r in zip(out, te_r)]) > 0.9
    groups = np.arange(24) // 2
    res = evaluate_report_generation(gen, te, te_r, groups, n_boot=30, seed=0)
    assert set(res.columns) == COLUMNS and set(res.task) == {"report_generation"}
    macro = res[res.label == "macro"].set_index("metric")
    assert set(macro.index) == {"bleu4", "rouge_l", "label_f1"}
    assert macro.loc["label_f1", "value"] > 0.9 and macro.loc["bleu4", "value"] > 0.8
    assert macro.loc["label_f1", "n_labels"] == 3 and len(macro.loc["rouge_l", "replicates"]) == 30
    assert set(res[res.label != "macro"].label) == {"pleural_effusion", "pneumothorax", "cardiomegaly"}

    trn, _ = _data(60, rng, signal=False)
    van, _ = _data(15, rng, signal=False)
    ten, _ = _data(24, rng, signal=False)
    blind = fit_report_generator(trn, tr_r, van, va_r, decoder=cfg, epochs=10, seed=0, max_len=32)
    res_n = evaluate_report_generation(blind, ten, te_r, groups, n_boot=30, seed=0)
    f1_blind = res_n[(res_n.label == "macro") & (res_n.metric == "label_f1")].value.iloc[0]
    assert f1_blind < 0.6 < macro.loc["label_f1", "value"]


def test_beam_search_is_greedy_at_width_one_and_prefers_the_likely_sequence():
    # A toy decoder whose next-token scores depend only on the last token: 0 -> 3 (0.6) or 4 (0.4);
    # 3 -> eos(2) 0.5 / 5 0.5; 4 -> eos 1.0. Greedy takes 3 then a coin flip; beam search finds [4] (0.4 > 0.3).
    table = torch.full((6, 6), -1e9)
    table[0, 3], table[0, 4] = np.log(0.6), np.log(0.4)
    table[3, 2], table[3, 5] = np.log(0.5) + 1e-4, np.log(0.5)
    table[4, 2] = 0.0
    table[5, 2] = 0.0
    table[2, 2] = 0.0

    def decoder(prefix, ids):
        return table[ids]

    prefix = torch.zeros(2, 1, 4)
    assert beam_search(decoder, prefix, 0, 2, 5, beams=1) == [[3], [3]]
    assert beam_search(decoder, prefix, 0, 2, 5, beams=2, length_penalty=0.0) == [[4], [4]]


def _tiny_gpt2(path, texts):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = ["<pad>", "<eos>", "<unk>"] + sorted({t for text in texts for t in tokenize(text)})
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=len(words), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                                    bos_token_id=1, eos_token_id=1))
    lm.save_pretrained(path)
    tok.save_pretrained(path)


def test_hugging_face_causal_lm_decoder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rng = np.random.default_rng(1)
    tr, tr_r = _data(24, rng)
    va, va_r = _data(8, rng)
    _tiny_gpt2(tmp_path / "lm", [t.lower() for t in TEMPLATES])
    cfg = HFDecoderConfig(str(tmp_path / "lm"), train_lm=True, lr=1e-2)
    gen = fit_report_generator(tr, tr_r, va, va_r, decoder=cfg, epochs=6, seed=0, max_len=24)
    assert gen.val_loss[gen.best_epoch - 1] < gen.val_loss[0]
    out = gen.generate(va, max_new_tokens=20, beams=2)
    # Generation feeds the prefix exactly as training did: every report opens with its first section header.
    assert len(out) == 8 and all(o.startswith("findings") for o in out)
    res = evaluate_report_generation(gen, va, va_r, np.arange(8), n_boot=10, seed=0)
    assert set(res.columns) == COLUMNS and {"bleu4", "rouge_l"} <= set(res.metric)
    # Projector-only alignment leaves the language model untouched.
    from transformers import AutoModelForCausalLM
    frozen = fit_report_generator(tr, tr_r, va, va_r, decoder=HFDecoderConfig(str(tmp_path / "lm")), epochs=2)
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "lm").state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in frozen.decoder.lm.state_dict().items())
    with pytest.raises(RadscaleError, match="cannot load"):
        fit_report_generator(tr, tr_r, va, va_r, decoder=HFDecoderConfig(str(tmp_path / "missing")), epochs=1)


def test_report_section_picks_findings_or_impression_and_falls_back():
    full = ("EXAMINATION: Chest PA.\nINDICATION: Cough.\n\nFINDINGS: Small left pleural effusion.\n\n"
            "IMPRESSION: Effusion.")
    assert report_section(full, "findings") == "Small left pleural effusion."
    assert report_section(full, "impression") == "Effusion."
    assert report_section(full, "full") == full
    # One section missing: the other; no headers at all: the whole text; only history: nothing to generate.
    assert report_section("INDICATION: Cough.\nIMPRESSION: Clear lungs.", "findings") == "Clear lungs."
    assert report_section("FINDINGS: Clear lungs.", "impression") == "Clear lungs."
    assert report_section("Heart size normal. Lungs clear.", "findings") == "Heart size normal. Lungs clear."
    assert report_section("HISTORY: Cough.\nCOMPARISON: None.", "findings") == ""
    with pytest.raises(RadscaleError, match="report section 'findngs'"):
        report_section(full, "findngs")
