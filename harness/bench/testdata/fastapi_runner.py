"""The original pattern's runner for the benchmark's baseline: FastAPI +
pydantic + uvicorn serving a runner_adapter module over HTTP, as that
design did it. Every top-level run_<name> function of the adapter becomes
POST /run/<name>; its request body is a pydantic model built from the
function's signature; the function's own return value is the response (no
response model, so FastAPI does not validate or copy the output).

    python3 -m uvicorn fastapi_runner:app --port PORT --no-access-log

The adapter is py_word_count (PNP_BENCH_ADAPTER names another).
"""

import importlib
import inspect
import os

from fastapi import FastAPI
from pydantic import create_model

adapter = importlib.import_module(os.environ.get("PNP_BENCH_ADAPTER", "py_word_count"))
app = FastAPI()


def _request_model(name, fn):
    fields = {}
    for p in inspect.signature(fn).parameters.values():
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (p.annotation, default)
    return create_model(f"{name}_request", **fields)


def _route(name, fn):
    model = _request_model(name, fn)

    def endpoint(request: model):
        return fn(**request.__dict__)

    endpoint.__name__ = name
    app.post(f"/run/{name}")(endpoint)


for _attr, _fn in vars(adapter).items():
    if _attr.startswith("run_") and inspect.isfunction(_fn):
        _route(_attr[len("run_"):], _fn)
