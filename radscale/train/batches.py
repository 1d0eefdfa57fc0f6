"""Manifest rows -> training arrays (run by Ray Data `map_batches` on CPU, or directly in tests).

Images are decoded once to a fixed square (short side resized with antialiasing, centre-cropped) as uint8,
so the device receives compact tensors and does all augmentation itself. A batch that carries `image_bytes`
(prepared shards, `data.shards`) decodes those bytes; otherwise each row's `uri` is read. Undecodable images
are dropped from the batch and quarantined (uri + one-line reason; never pixels or report text).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from radscale.data.images import ImageDecodeError, decode_bytes, decode_image
from radscale.data.shards import IMAGE_BYTES
from radscale.data.vocab import Vocabulary, prompt_label_names
from radscale.models.text import tokenize


def square_uint8(pixels: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop a short-side-resized image to size x size and quantise to uint8."""
    h, w = pixels.shape
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    crop = pixels[top:top + size, left:left + size]
    if crop.shape != (size, size):       # smaller than requested: pad with edge values
        crop = np.pad(crop, ((0, size - crop.shape[0]), (0, size - crop.shape[1])), mode="edge")
    return np.clip(np.rint(crop * 255.0), 0, 255).astype(np.uint8)


class TrainBatchBuilder:
    def __init__(self, objective: str, decode_size: int, context_length: int = 77,
                 vocabulary: Vocabulary | None = None, quarantine_dir: str = ""):
        self.objective = objective
        self.size = decode_size
        self.context_length = context_length
        self.vocab = vocabulary or Vocabulary()
        self.quarantine_dir = quarantine_dir

    def _quarantine(self, image_id: str, err: ImageDecodeError) -> None:
        if not self.quarantine_dir:
            return
        Path(self.quarantine_dir).mkdir(parents=True, exist_ok=True)
        rec = {"uri": err.uri, "image_id": image_id, "reason": err.reason, "stage": "train-decode"}
        with open(Path(self.quarantine_dir) / f"decode-{os.getpid()}.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")

    def decode_square(self, uri: str, data: bytes | None = None) -> np.ndarray:
        """One uint8 square from prepared bytes when given, else from the file at `uri`."""
        if data is None:
            dec = decode_image(uri, short_side=self.size, upscale=True)
        else:
            dec = decode_bytes(data, uri_for_errors=uri, short_side=self.size, upscale=True)
        return square_uint8(dec.pixels, self.size)

    def decode_batch(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """([B', size, size] uint8, kept row indices); undecodable rows are quarantined and left out."""
        blobs = batch.get(IMAGE_BYTES)
        images, keep = [], []
        for i, (image_id, uri) in enumerate(zip(batch["image_id"], batch["uri"])):
            try:
                images.append(self.decode_square(str(uri), None if blobs is None else blobs[i]))
            except ImageDecodeError as err:
                self._quarantine(str(image_id), err)
                continue
            keep.append(i)
        stacked = np.stack(images) if images else np.zeros((0, self.size, self.size), np.uint8)
        return stacked, np.asarray(keep, dtype=np.int64)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images, idx = self.decode_batch(batch)
        out = {"image": images}
        if self.objective in ("clip", "unicl"):
            reports = [str(r) if r is not None else "" for r in np.asarray(batch["report"], dtype=object)[idx]]
            out["tokens"] = tokenize(reports, self.context_length).numpy()
            out["labels"] = self.label_matrix(batch, idx)
        return out

    def label_matrix(self, batch: dict[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
        """[B, L] int8 with 1 where the prompt label is positive (uncertain and unmentioned are not)."""
        keys, _ = prompt_label_names(self.vocab)
        out = np.zeros((len(idx), len(keys)), dtype=np.int8)
        for j, key in enumerate(keys):
            if key.endswith("_present") and key not in batch:
                dev = key[: -len("_present")]
                cols = [t for t in self.vocab.tubes if t.startswith(dev + "_") and t in batch]
                vals = [_positive(batch[c])[idx] for c in cols]
                out[:, j] = np.any(vals, axis=0) if vals else 0
            elif key in batch:
                out[:, j] = _positive(batch[key])[idx]
        return out


def _positive(col: np.ndarray) -> np.ndarray:
    arr = np.asarray(col, dtype=object)
    return np.array([v is not None and not (isinstance(v, float) and np.isnan(v)) and v == 1 for v in arr])
