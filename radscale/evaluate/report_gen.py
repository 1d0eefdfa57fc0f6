"""Report-generation probe: frozen image features -> projector -> causal language decoder, trained on probe_train.

Prefix: the last layer's CLS token plus the patch tokens averaged in `n_bands` contiguous groups of the raster
order (horizontal bands, top to bottom: where a tube tip or an effusion sits), each through a shared
LayerNorm + 2-layer MLP (the LLaVA-1.5 projector, Liu et al. 2023) with a learned embedding per prefix slot.
Decoders (RECIPES.md: the study used MAIRA-2, a 7B LLM; a small decoder is the CPU default):
- "small" / SmallDecoderConfig: a GPT-style pre-norm transformer trained from scratch with teacher forcing on
  a word-level vocabulary of the probe_train reports (words rarer than `min_count` become <unk>); a closed
  vocabulary is small, fast on CPU and cannot emit half-words that the labeler would misread.
- HFDecoderConfig: any Hugging Face causal LM and its tokenizer from a local folder; the prefix enters as
  inputs_embeds. By default only the projector learns (LLaVA stage-1 alignment); train_lm=True fine-tunes all.
Epoch selection: lowest token cross-entropy on probe_val, early stop after `patience` epochs without gain.
Decoding: greedy, or beam search with length-normalised log-probability.
Target text (`report_section`): the FINDINGS section by default, as MAIRA-2 and most CXR report-generation work
generate it; the EXAMINATION / INDICATION / COMPARISON boilerplate is not in the image, and the IMPRESSION
restates the findings, so training on full reports spends the decoder's few hundred examples on text the
features cannot predict (phantom, 400 probe_train reports, small decoder, label-encoding vs noise features:
label F1 0.110 vs 0.039 on findings, 0.064 vs 0.011 on full text; BLEU-4 on full text is mostly boilerplate,
0.227 vs 0.208).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping, Sequence, get_args

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from radscale.config.specs import ReportSection
from radscale.data.labels.rules import section_groups
from radscale.data.vocab import DEFAULT_VOCABULARY, Vocabulary
from radscale.errors import RadscaleError
from radscale.evaluate.metrics import cluster_bootstrap
from radscale.evaluate.text_metrics import (bleu_from_stats, bleu_stats, label_f1, positive_labels, rouge_l,
                                            tokenize)

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
REPORT_SECTIONS = get_args(ReportSection)


def report_section(text: str, section: str) -> str:
    """The part of a report the probe generates and is scored on, grouped as the labeler groups it
    (`section_groups`). "findings": the findings group (a report without headers: all of it), else the
    IMPRESSION; "impression": the reverse. "full": the text unchanged."""
    if section not in REPORT_SECTIONS:
        raise RadscaleError(f"report section {section!r}: expected one of {', '.join(REPORT_SECTIONS)}")
    if section == "full":
        return text
    groups = section_groups(text)
    other = "impression" if section == "findings" else "findings"
    return groups[section] or groups[other]


@dataclass(frozen=True)
class SmallDecoderConfig:
    width: int = 128
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    lr: float = 1e-3
    min_count: int = 2


@dataclass(frozen=True)
class HFDecoderConfig:
    model_path: str                     # local folder with save_pretrained model + tokenizer (no hub access)
    train_lm: bool = False
    lr: float = 1e-4
    dtype: str = "float32"              # "bfloat16" on GPU for large models


@dataclass(frozen=True)
class WordVocab:
    """Word-level vocabulary: ids 0-3 are SPECIALS, then words by falling frequency in the training reports."""

    words: tuple[str, ...]
    index: dict[str, int] = field(init=False, repr=False, compare=False)
    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __post_init__(self):
        object.__setattr__(self, "index", {w: i for i, w in enumerate(self.words)})

    @classmethod
    def build(cls, texts: Sequence[str], min_count: int = 2) -> "WordVocab":
        counts = Counter(tok for text in texts for tok in tokenize(text))
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(SPECIALS + tuple(kept))

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(tok, self.unk_id) for tok in tokenize(text)]

    def decode(self, ids: Sequence[int]) -> str:
        words = [self.words[i] for i in ids if i >= len(SPECIALS)]
        text = re.sub(r" ([.,;:!?)])", r"\1", " ".join(words))       # no space before punctuation
        return text.replace("( ", "(")


class HFTokens:
    """A Hugging Face tokenizer behind WordVocab's interface; BOS falls back to EOS (the GPT-2 convention)."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.eos_id = tokenizer.eos_token_id
        if self.eos_id is None:
            raise RadscaleError("HFDecoderConfig: the tokenizer in model_path defines no eos token")
        self.bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else self.eos_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id

    def __len__(self) -> int:
        return len(self.tok)

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True).strip()


class PrefixProjector(nn.Module):
    def __init__(self, dim: int, width: int, n_tokens: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, width), nn.GELU(), nn.Linear(width, width))
        self.slot = nn.Parameter(torch.zeros(n_tokens, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(x)) + self.slot


class SmallDecoder(nn.Module):
    """Pre-norm causal transformer over [prefix ; tokens]; output projection tied to the token embedding."""

    def __init__(self, vocab_size: int, cfg: SmallDecoderConfig, max_positions: int):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, cfg.width)
        nn.init.normal_(self.tok.weight, std=0.02)              # GPT-2 init: tied logits start near uniform
        self.pos = nn.Parameter(torch.randn(max_positions, cfg.width) * 0.02)
        layer = nn.TransformerEncoderLayer(cfg.width, cfg.heads, 4 * cfg.width, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.width)

    def forward(self, prefix: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Logits [B, L, V] at the token positions: position j predicts ids[:, j + 1]."""
        x = torch.cat([prefix, self.tok(ids)], 1)
        x = x + self.pos[:x.shape[1]]
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1], device=x.device, dtype=x.dtype)
        h = self.norm(self.blocks(x, mask=mask, is_causal=True))
        return h[:, prefix.shape[1]:] @ self.tok.weight.T


class HFDecoder(nn.Module):
    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, prefix: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        emb = self.lm.get_input_embeddings()(ids)
        logits = self.lm(inputs_embeds=torch.cat([prefix.to(emb.dtype), emb], 1)).logits
        return logits[:, prefix.shape[1]:].float()


def prefix_inputs(feats, n_bands: int) -> np.ndarray:
    """{"cls": [N, D], "patch": [N, P, D]} -> [N, 1 + n_bands, D]; an array [N, T, D] (or [N, F]) passes as is."""
    if isinstance(feats, Mapping):
        cls, patch = np.asarray(feats["cls"], np.float32), np.asarray(feats["patch"], np.float32)
        if patch.ndim != 3 or cls.shape != (patch.shape[0], patch.shape[2]) or patch.shape[1] < n_bands:
            raise RadscaleError(f"report probe: features cls {cls.shape} / patch {patch.shape} do not fit "
                                f"{n_bands} bands")
        bands = [b.mean(1) for b in np.array_split(patch, n_bands, axis=1)]
        return np.stack([cls, *bands], 1)
    x = np.asarray(feats, np.float32)
    return x[:, None] if x.ndim == 2 else x


@torch.no_grad()
def beam_search(decoder: nn.Module, prefix: torch.Tensor, start: int, eos: int, max_new: int, beams: int = 1,
                length_penalty: float = 1.0) -> list[list[int]]:
    """Token ids per row (without start/eos); beams=1 is greedy decoding. Scores are summed log-probs divided by
    length**length_penalty (Wu et al. 2016 use a softer form; the plain power is enough here)."""
    b, k = prefix.shape[0], beams
    pre = prefix.repeat_interleave(k, 0)
    seqs = torch.full((b * k, 1), start, dtype=torch.long, device=prefix.device)
    scores = torch.full((b, k), float("-inf"), device=prefix.device)
    scores[:, 0] = 0.0                                          # one live beam until the first expansion
    done = torch.zeros(b * k, dtype=torch.bool, device=prefix.device)
    lengths = torch.zeros(b * k, device=prefix.device)
    for _ in range(max_new):
        logp = F.log_softmax(decoder(pre, seqs)[:, -1].float(), -1)
        vocab = logp.shape[1]
        logp[done] = float("-inf")
        logp[done, eos] = 0.0                                   # finished beams only pad with eos, at no cost
        top, idx = (scores.view(-1, 1) + logp).view(b, k * vocab).topk(k, 1)
        src = (torch.arange(b, device=prefix.device).view(-1, 1) * k + idx // vocab).view(-1)
        tok = (idx % vocab).view(-1)
        lengths = lengths[src] + (~done[src]).float()
        done = done[src] | (tok == eos)
        seqs, scores = torch.cat([seqs[src], tok.view(-1, 1)], 1), top
        if bool(done.all()):
            break
    best = (scores / lengths.view(b, k).clamp(min=1) ** length_penalty).argmax(1)
    out = []
    for i, j in enumerate(best.tolist()):
        ids = seqs[i * k + j, 1:].tolist()
        out.append(ids[:ids.index(eos)] if eos in ids else ids)
    return out


@dataclass(frozen=True)
class ReportGenerator:
    projector: PrefixProjector
    decoder: nn.Module
    tokens: WordVocab | HFTokens
    n_bands: int
    max_len: int
    best_epoch: int
    val_loss: tuple[float, ...]
    device: str = "cpu"

    @torch.no_grad()
    def generate(self, feats, batch_size: int = 32, beams: int = 1, max_new_tokens: int | None = None) -> list[str]:
        x_all = prefix_inputs(feats, self.n_bands)
        max_new = max_new_tokens or self.max_len + 1
        self.projector.eval()
        self.decoder.eval()
        out: list[str] = []
        for i in range(0, len(x_all), batch_size):
            prefix = self.projector(torch.as_tensor(x_all[i:i + batch_size], device=self.device))
            if isinstance(self.decoder, HFDecoder):
                ids = self._hf_generate(prefix, max_new, beams)
            else:  # the small decoder's position table ends at max_len tokens + eos
                ids = beam_search(self.decoder, prefix, self.tokens.bos_id, self.tokens.eos_id,
                                  min(max_new, self.max_len + 1), beams)
            out += [self.tokens.decode(seq) for seq in ids]
        return out

    def _hf_generate(self, prefix: torch.Tensor, max_new: int, beams: int) -> list[list[int]]:
        lm, t = self.decoder.lm, self.tokens
        start = lm.get_input_embeddings()(torch.full((len(prefix), 1), t.bos_id, device=prefix.device))
        embeds = torch.cat([prefix.to(start.dtype), start], 1)
        new = lm.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long,
                          device=prefix.device), max_new_tokens=max_new, num_beams=beams, do_sample=False,
                          eos_token_id=t.eos_id, pad_token_id=t.pad_id)
        return [ids[:ids.index(t.eos_id)] if t.eos_id in ids else ids for ids in new.tolist()]


def _build_decoder(decoder, train_reports, n_prefix: int, max_len: int):
    if isinstance(decoder, HFDecoderConfig):
        from transformers import AutoModelForCausalLM, AutoTokenizer   # optional, heavy: only on this path
        if not isinstance(getattr(torch, decoder.dtype, None), torch.dtype):
            raise RadscaleError(f"HFDecoderConfig: unknown dtype {decoder.dtype!r} (e.g. float32, bfloat16)")
        try:
            tok = AutoTokenizer.from_pretrained(decoder.model_path, local_files_only=True)
            lm = AutoModelForCausalLM.from_pretrained(decoder.model_path, local_files_only=True,
                                                      dtype=getattr(torch, decoder.dtype))
        except (OSError, ValueError) as e:
            raise RadscaleError(f"HFDecoderConfig: cannot load model/tokenizer from {decoder.model_path}: "
                                f"{type(e).__name__}") from None
        lm.requires_grad_(decoder.train_lm)
        return HFDecoder(lm), HFTokens(tok), lm.get_input_embeddings().embedding_dim, decoder.lr, decoder.train_lm
    cfg = SmallDecoderConfig() if decoder == "small" else decoder
    if not isinstance(cfg, SmallDecoderConfig):
        raise RadscaleError(f"report probe: decoder must be 'small', SmallDecoderConfig or HFDecoderConfig, "
                            f"got {type(decoder).__name__}")
    vocab = WordVocab.build(train_reports, cfg.min_count)
    return SmallDecoder(len(vocab), cfg, n_prefix + max_len + 2), vocab, cfg.width, cfg.lr, True


def _batch(seqs: list[list[int]], pad: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher forcing: inputs [start, w1..wn], targets [w1..wn, eos]; padded targets are -100 (ignored)."""
    width = max(len(s) for s in seqs) - 1
    inp = torch.full((len(seqs), width), pad, dtype=torch.long)
    tgt = torch.full((len(seqs), width), -100, dtype=torch.long)
    for i, s in enumerate(seqs):
        inp[i, :len(s) - 1] = torch.as_tensor(s[:-1])
        tgt[i, :len(s) - 1] = torch.as_tensor(s[1:])
    return inp.to(device), tgt.to(device)


def fit_report_generator(train_feats, train_reports: Sequence[str], val_feats, val_reports: Sequence[str],
                         decoder: str | SmallDecoderConfig | HFDecoderConfig = "small", epochs: int = 20,
                         seed: int = 0, *, n_bands: int = 4, batch_size: int = 16, max_len: int = 128,
                         patience: int = 3, weight_decay: float = 0.01, device: str = "cpu") -> ReportGenerator:
    """Train projector (+ decoder) with AdamW on probe_train; keep the epoch with the lowest probe_val loss.
    Reports are truncated to `max_len` tokens before the closing eos."""
    x_tr, x_va = prefix_inputs(train_feats, n_bands), prefix_inputs(val_feats, n_bands)
    for name, x, reps in (("probe_train", x_tr, train_reports), ("probe_val", x_va, val_reports)):
        if len(x) != len(reps) or len(x) == 0:
            raise RadscaleError(f"report probe {name}: {len(x)} feature rows for {len(reps)} reports")
    with torch.random.fork_rng(devices=[]):                     # seeded init, caller's RNG untouched
        torch.manual_seed(seed)
        dec, tokens, width, lr, train_dec = _build_decoder(decoder, train_reports, x_tr.shape[1], max_len)
        proj = PrefixProjector(x_tr.shape[2], width, x_tr.shape[1])
    proj.to(device)
    dec.to(device)
    seq_tr, seq_va = ([[tokens.bos_id, *tokens.encode(r)[:max_len], tokens.eos_id] for r in reps]
                      for reps in (train_reports, val_reports))
    modules = [proj, dec] if train_dec else [proj]
    opt = torch.optim.AdamW([p for m in modules for p in m.parameters()], lr=lr, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)

    def loss_of(idx, x, seqs) -> tuple[torch.Tensor, int]:
        inp, tgt = _batch([seqs[i] for i in idx], tokens.pad_id, device)
        logits = dec(proj(torch.as_tensor(x[idx], device=device)), inp)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100,
                               reduction="sum"), int((tgt != -100).sum())

    def snapshot() -> list[dict]:
        return [{k: v.detach().to("cpu", copy=True) for k, v in m.state_dict().items()} for m in modules]

    best, best_state, best_epoch, history = float("inf"), snapshot(), 0, []
    for epoch in range(1, epochs + 1):
        for m in modules:
            m.train()
        for idx in np.array_split(rng.permutation(len(x_tr)), max(1, len(x_tr) // batch_size)):
            total, count = loss_of(idx, x_tr, seq_tr)
            opt.zero_grad(set_to_none=True)
            (total / count).backward()
            opt.step()
        proj.eval()
        dec.eval()
        with torch.no_grad():
            parts = [loss_of(idx, x_va, seq_va) for idx in np.array_split(np.arange(len(x_va)),
                                                                          -(-len(x_va) // batch_size))]
        history.append(float(sum(float(t) for t, _ in parts) / sum(c for _, c in parts)))
        if history[-1] < best:
            best, best_epoch = history[-1], epoch
            best_state = snapshot()
        elif epoch - best_epoch >= patience:
            break
    for m, state in zip(modules, best_state):
        m.load_state_dict(state)
    return ReportGenerator(proj.eval(), dec.eval(), tokens, n_bands, max_len, best_epoch, tuple(history), device)


def evaluate_report_generation(generator: ReportGenerator, test_feats, test_reports: Sequence[str],
                               groups: np.ndarray, vocabulary: Vocabulary = DEFAULT_VOCABULARY, n_boot: int = 200,
                               seed: int = 0, *, domain: str = "in-domain", beams: int = 1,
                               batch_size: int = 32) -> pd.DataFrame:
    """Rows task="report_generation", metric bleu4|rouge_l|label_f1, patient-clustered 95% CIs.

    label="macro" marks each metric's headline row (the key downstream tables use): corpus BLEU-4, mean ROUGE-L
    (both n_labels=0: not label-based) and macro label F1 over labels with reference support; label_f1 also
    gets one row per supported label. Columns match evaluate_classification.
    """
    groups = np.asarray(groups)
    if len(groups) != len(test_reports):
        raise RadscaleError(f"evaluate_report_generation: {len(groups)} patient ids for {len(test_reports)} reports")
    generated = generator.generate(test_feats, batch_size, beams)
    if len(generated) != len(test_reports):
        raise RadscaleError(f"evaluate_report_generation: {len(generated)} feature rows for "
                            f"{len(test_reports)} reports")
    hyp, ref = [tokenize(t) for t in generated], [tokenize(t) for t in test_reports]
    stats = np.stack([bleu_stats(h, r) for h, r in zip(hyp, ref)])
    rouge = np.array([rouge_l(h, r) for h, r in zip(hyp, ref)])
    gen_pos, ref_pos = positive_labels(generated, vocabulary), positive_labels(test_reports, vocabulary)
    kept = np.flatnonzero(ref_pos.sum(0) > 0)
    n = len(test_reports)
    rows = []

    def add(metric, ci, label="macro", n_labels=0, n_test=n, reps=True):
        rows.append(dict(task="report_generation", domain=domain, metric=metric, label=label, value=ci.value,
                         ci_lo=ci.lo, ci_hi=ci.hi, n_test=n_test, n_labels=n_labels,
                         replicates=ci.replicates.tolist() if reps else None))

    add("bleu4", cluster_bootstrap(lambda s: bleu_from_stats(s.sum(0)), groups, n_boot, seed, stats))
    add("rouge_l", cluster_bootstrap(lambda r: float(r.mean()), groups, n_boot, seed, rouge))
    if len(kept):
        add("label_f1", cluster_bootstrap(lambda p, r: label_f1(p, r)[0], groups, n_boot, seed,
                                          gen_pos[:, kept], ref_pos[:, kept]), n_labels=len(kept))
        for j in kept:
            ci = cluster_bootstrap(lambda p, r: label_f1(p[:, None], r[:, None])[0], groups, n_boot, seed,
                                   gen_pos[:, j], ref_pos[:, j])
            add("label_f1", ci, label=vocabulary.labels[j], n_labels=1, reps=False)
    return pd.DataFrame(rows)
