"""Handwritten digit recognition with scikit-learn, served two ways: one
image per call (run_digits) and in batches the runner assembles from
concurrent requests (run_digits_batch). The model is a random forest
trained in setup() on the 8×8 digits data set scikit-learn ships.

    pnp runner --algorithms none --worker '/usr/bin/python3 sdk/python/pnpworker.py examples/python/digits.py'
    nats req run.digits_batch '{"pixels":[0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0]}'
"""

from typing import List, TypedDict

import pnpworker

VERSION = "1.0.0"

_model = None


def setup():
    global _model
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier

    digits = load_digits()
    _model = RandomForestClassifier(n_estimators=100, random_state=0).fit(digits.data, digits.target)


class Image(TypedDict):
    pixels: List[float]
    """64 grey levels, 0 to 16, row by row."""


class Digit(TypedDict):
    digit: int
    confidence: float


def _check(img: Image):
    if len(img["pixels"]) != 64:
        return pnpworker.Reject(f"want 64 pixels, got {len(img['pixels'])}")
    return None


def run_digits(image: Image) -> Digit:
    """Recognises one 8x8 handwritten digit."""
    bad = _check(image)
    if bad:
        raise bad
    probs = _model.predict_proba([image["pixels"]])[0]
    best = int(probs.argmax())
    return {"digit": best, "confidence": round(float(probs[best]), 4)}


@pnpworker.batch(max_size=32, max_wait_ms=5)
def run_digits_batch(images: List[Image]) -> List[Digit]:
    """Recognises 8x8 handwritten digits, many per model call."""
    out = [_check(img) for img in images]
    rows = [img["pixels"] for img, bad in zip(images, out) if bad is None]
    if rows:
        probs = iter(_model.predict_proba(rows))
        for i, bad in enumerate(out):
            if bad is None:
                p = next(probs)
                best = int(p.argmax())
                out[i] = {"digit": best, "confidence": round(float(p[best]), 4)}
    return out
