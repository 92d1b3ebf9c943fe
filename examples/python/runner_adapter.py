"""A runner_adapter in the original convention: every top-level run_<name>
function is an algorithm; its type hints are its input and output schemas,
its docstring its description. Nothing here imports pnpworker.

Serve it with:
    pnp runner --algorithms none --worker '/usr/bin/python3 sdk/python/pnpworker.py examples/python/runner_adapter.py'
"""

import os
from typing import Literal, Optional, TypedDict

# The deployment picks the model and names its version (pnp runner
# --worker-env IRIS_VERSION=2.0.0 --worker-env IRIS_TREES=3): a second
# version runs next to the first with no edit here (docs/ROLLOUT.md).
VERSION = os.environ.get("IRIS_VERSION", "1.0.0")
TREES = int(os.environ.get("IRIS_TREES", "50"))

_model = None
_species = None


def setup():
    """Train the iris classifier once, before anything is served, on the
    data set scikit-learn ships (nothing is downloaded)."""
    global _model, _species
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    iris = load_iris()
    _model = RandomForestClassifier(n_estimators=TREES, random_state=0).fit(iris.data, iris.target)
    _species = [str(n) for n in iris.target_names]


class IrisPrediction(TypedDict):
    species: Literal["setosa", "versicolor", "virginica"]
    confidence: float


def run_iris_species(sepal_length: float, sepal_width: float, petal_length: float, petal_width: float) -> IrisPrediction:
    """Predicts the species of an iris flower from its measurements in cm
    (a random forest trained on scikit-learn's iris data set)."""
    probs = _model.predict_proba([[sepal_length, sepal_width, petal_length, petal_width]])[0]
    best = int(probs.argmax())
    return {"species": _species[best], "confidence": round(float(probs[best]), 4)}


def run_text_stats(text: str, top: int = 3, lowercase: Optional[bool] = True) -> dict:
    """Counts the words of a text and lists the most frequent ones."""
    words = text.split()
    if lowercase:
        words = [w.lower() for w in words]
    counts = {}
    for w in words:
        counts[w] = counts.get(w, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return {"words": len(words), "top": [{"word": w, "count": c} for w, c in ranked]}
