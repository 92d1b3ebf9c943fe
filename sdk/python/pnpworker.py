#!/usr/bin/env python3
"""pnpworker: serve plain Python functions as pnpworker algorithms.

    python3 -m pnpworker PATH_OR_MODULE              # speak the worker protocol
    python3 -m pnpworker --describe PATH_OR_MODULE   # print the hello and exit

(or ``python3 pnpworker.py ...`` from a checkout). The module is imported and
every function named ``run_<algorithm>`` in it, defined there or imported, is
served as the algorithm ``<algorithm>``; no decorator is needed. A function
whose name cannot be an algorithm's (``run_OCR``) is skipped with a log line;
the others are served:

* the parameters' type hints become the input JSON Schema (an object with
  one property per parameter; parameters with defaults are not required).
  A function with a single parameter typed as a dataclass, TypedDict or
  pydantic model takes that object as its whole input;
* the return annotation becomes the output schema, the docstring's first
  paragraph the description, the module's ``VERSION`` (default "0.0.0") the version;
* an optional module-level ``setup()`` runs once before anything is served
  (load models there);
* ``raise pnpworker.Reject("why")`` answers 422 with that message, and so
  does an exception that carries an HTTP status in 400-499 (``status_code``,
  ``status`` or ``response.status_code``, as requests' HTTPError has): the
  caller's input is at fault, so a job is not retried. Any other exception
  answers 500 and its traceback goes to the runner's log as one entry;
* a function serves one request at a time unless its author says more
  (``@pnpworker.algorithm(concurrency=N)``, for thread-safe code) or the
  operator does (``pnp runner --worker-concurrency N``, which sets
  PNP_WORKER_CONCURRENCY for functions that do not say);
* ``logging`` works: unless the module configures logging itself, records
  of level INFO and above go to the runner's log, one entry each.

Overrides: ``@pnpworker.algorithm(timeout=..., concurrency=..., name=...,
input_schema=..., output_schema=...)``; batches: ``@pnpworker.batch(
max_size=32, max_wait_ms=5)`` on ``def run_x(items: list[In]) -> list[Out]``.

Stdout carries the protocol only. At start the SDK keeps a private duplicate
of file descriptor 1 for protocol lines, then points descriptor 1 and
``sys.stdout`` at stderr: a stray ``print()``, or a C library writing to
descriptor 1, ends up in the runner's log instead of corrupting the stream.

Standard library only; Python 3.9 or newer. Install it with
``pip install ./sdk/python``; its major version is the worker protocol
version it speaks. The protocol is in docs/WORKER.md.
"""

import collections
import collections.abc
import dataclasses
import enum
import importlib
import importlib.util
import inspect
import json
import logging
import os
import re
import sys
import threading
import time
import traceback
import typing
import unicodedata

PROTOCOL = 1
# The major version is the protocol's: an SDK 1.x speaks protocol 1 (a
# test holds them together).
__version__ = "1.2.0"

__all__ = [
    "Reject",
    "algorithm",
    "batch",
    "cancelled",
    "log",
    "progress",
    "describe",
    "schema_of",
    "serve",
    "main",
]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# Requests a plain function serves at once, unless its author or the
# operator (PNP_WORKER_CONCURRENCY, from pnp's --worker-concurrency) says
# more: one, like a model server that serves one request at a time, since
# many models (Keras predict, a tokenizer with state) are not thread-safe.
DEFAULT_CONCURRENCY = 1
# The most digits of an integer read from a request: Python 3.11's own
# limit for int() (sys.get_int_max_str_digits), applied on every version,
# since longer conversions cost quadratic time where there is no limit.
MAX_INT_DIGITS = 4300
# The id of a request line that cannot be parsed: the runner writes "type"
# and "id" before the input.
_LINE_ID = re.compile(rb'^\s*\{\s*"type"\s*:\s*"(?:request|batch)"\s*,\s*"id"\s*:\s*"([^"\\]{1,64})"')


class _InputTooLarge(ValueError):
    """A request's input is valid JSON that this process will not read."""


def _parse_int(text):
    digits = len(text) - (text[0] == "-")
    if digits > MAX_INT_DIGITS:
        raise _InputTooLarge(f"input holds an integer of {digits} digits; this worker reads at most {MAX_INT_DIGITS}")
    return int(text)


# Python 3.11 and newer refuse long integers in C, at no cost per number:
# the hook (a Python call per integer, twice the parse time of an input of
# numbers) is used there only to name the problem once a line failed.
_LOADS_OPTIONS = {} if hasattr(sys, "get_int_max_str_digits") else {"parse_int": _parse_int}


class Reject(Exception):
    """Raise Reject("why") for input that satisfies the schema but that the
    algorithm cannot use: the caller gets a 422 with the message. In a batch
    function, return a Reject in place of an item's output to reject only
    that item."""

    def __init__(self, message):
        super().__init__(message)
        self.message = str(message)


def algorithm(name=None, *, version=None, description=None, timeout=None,
              concurrency=None, input_schema=None, output_schema=None):
    """Override what is inferred for a run_ function: its algorithm name,
    version, description, timeout (seconds), concurrency (requests, or batch
    items, this process takes at once; default 1, or the operator's
    PNP_WORKER_CONCURRENCY; more than 1 means the function is thread-safe)
    and explicit JSON Schemas (dicts)."""

    def mark(fn):
        opts = dict(getattr(fn, "__pnpworker__", {}))
        for key, value in (("name", name), ("version", version), ("description", description),
                           ("timeout", timeout), ("concurrency", concurrency),
                           ("input_schema", input_schema), ("output_schema", output_schema)):
            if value is not None:
                opts[key] = value
        fn.__pnpworker__ = opts
        return fn

    return mark


def batch(max_size=32, max_wait_ms=5):
    """Make a run_ function a batch function: it takes ``items: list[In]``
    and returns ``list[Out]``, one output per item in order. The runner
    groups concurrent requests, at most max_size, waiting at most
    max_wait_ms for company."""
    if int(max_size) < 1 or max_wait_ms < 0:
        raise ValueError("batch: want max_size >= 1 and max_wait_ms >= 0")

    def mark(fn):
        opts = dict(getattr(fn, "__pnpworker__", {}))
        opts["batch"] = {"max_size": int(max_size), "max_wait_ms": float(max_wait_ms)}
        fn.__pnpworker__ = opts
        return fn

    return mark


_local = threading.local()


def cancelled():
    """True once the runner cancelled the request this thread is serving
    (its deadline passed). Long functions should check it and return; one
    that ignores it is killed after a grace period and its process
    restarted."""
    ev = getattr(_local, "cancel", None)
    return ev is not None and ev.is_set()


_MAX_PROGRESS_MESSAGE = 200


def progress(fraction, message=""):
    """Report how far the request this thread is serving got: fraction
    from 0 to 1 and a short message (one line of printable text, at most
    200 bytes of UTF-8). The job's record then has status running and shows
    it (pnp result, pnp jobs ls, the dashboard). The runner publishes at
    most one report per job every 250 ms, the latest; so calling it often
    is cheap on the network, though each call writes one line to the
    runner.

    Outside a request (a script calling the function directly, a thread of
    the function's own) and inside a batch function it does nothing. A
    fraction that is not a number from 0 to 1, or a message that is too
    long or holds control characters, raises ValueError."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise ValueError(f"progress fraction {fraction!r}: want a number from 0 to 1")
    fraction = float(fraction)
    if not 0.0 <= fraction <= 1.0:  # NaN fails both
        raise ValueError(f"progress fraction {fraction!r}: want a number from 0 to 1")
    message = str(message)
    if len(message.encode("utf-8", "surrogatepass")) > _MAX_PROGRESS_MESSAGE:
        raise ValueError(f"progress message of {len(message.encode('utf-8', 'surrogatepass'))} bytes: at most {_MAX_PROGRESS_MESSAGE}")
    for ch in message:
        if unicodedata.category(ch) in ("Cc", "Cs") or ch in "\u2028\u2029\u061c\u200e\u200f" or unicodedata.bidirectional(ch) in _BIDI_CONTROLS:
            raise ValueError(f"progress message: control character U+{ord(ch):04X} (want one line of printable text)")
    srv, rid = _server, getattr(_local, "id", None)
    if srv is None or rid is None:
        return
    srv.send({"type": "progress", "id": rid, "fraction": fraction, "message": message})


# Explicit directional formatting characters: they reorder what a
# terminal shows. With the marks U+061C, U+200E and U+200F (refused
# above) they are Unicode's Bidi_Control, which the runner refuses.
_BIDI_CONTROLS = ("LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI")


def log(message, level="info"):
    """Send a log line to the runner's log, tagged with the algorithm,
    request and job id being served by this thread."""
    srv = _server
    msg = {"type": "log", "level": level, "message": str(message)}
    alg = getattr(_local, "algorithm", None)
    if alg:
        msg["algorithm"] = alg
    rid = getattr(_local, "id", None)
    if rid:
        msg["id"] = rid
    job = getattr(_local, "job_id", None)
    if job:
        msg["job_id"] = job
    if srv is not None:
        srv.send(msg)
    else:
        print(message, file=sys.stderr)


# ---------------------------------------------------------------- schemas

_NoneType = type(None)


def _is_pydantic(tp):
    """A pydantic model class (v1 or v2), recognised without importing
    pydantic."""
    return isinstance(tp, type) and (
        hasattr(tp, "model_json_schema")
        or (hasattr(tp, "__fields__") and hasattr(tp, "schema") and hasattr(tp, "parse_obj")))


def _inline_refs(schema, defs=None, seen=()):
    """Replace local $refs to definitions/$defs by what they name, so that a
    pydantic schema can be nested in another one. A recursive reference
    becomes {} (anything)."""
    if defs is None and isinstance(schema, dict):
        defs = dict(schema.get("definitions", {}))
        defs.update(schema.get("$defs", {}))
        schema = {k: v for k, v in schema.items() if k not in ("definitions", "$defs")}
    if isinstance(schema, list):
        return [_inline_refs(v, defs, seen) for v in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str) and (ref.startswith("#/definitions/") or ref.startswith("#/$defs/")):
        name = ref.rsplit("/", 1)[1]
        if name in seen or name not in defs:
            return {}
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        target = _inline_refs(defs[name], defs, seen + (name,))
        return dict(target, **_inline_refs(rest, defs, seen)) if rest else target
    return {k: _inline_refs(v, defs, seen) for k, v in schema.items()}


def _is_required_marker(origin):
    """typing's Required[...] and NotRequired[...] (or typing_extensions'),
    which only say whether a TypedDict key is required."""
    return origin is not None and getattr(origin, "_name", None) in ("Required", "NotRequired")


def _is_typeddict(tp):
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__annotations__") and hasattr(tp, "__total__")


def _hints(obj):
    try:
        return typing.get_type_hints(obj, include_extras=True)
    except Exception:  # unresolvable forward references: best effort
        return dict(getattr(obj, "__annotations__", {}))


def _json_default(value):
    try:
        json.dumps(value, default=_jsonable, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


def schema_of(tp):
    """The JSON Schema of a type hint. Unknown types give {} (anything)."""
    if tp is inspect.Parameter.empty or tp is typing.Any or tp is object:
        return {}
    if tp is None or tp is _NoneType:
        return {"type": "null"}
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if _is_required_marker(origin):
        return schema_of(args[0]) if args else {}
    if origin is typing.Annotated:
        s = schema_of(args[0])
        for meta in args[1:]:
            if isinstance(meta, str):
                s = dict(s, description=meta)
        return s
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if tp is bytes:
        return {"type": "string", "contentEncoding": "base64"}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [m.value for m in tp]}
    if origin is typing.Union or (origin is not None and getattr(origin, "__name__", "") == "UnionType") \
            or type(tp).__name__ == "UnionType":
        args = args or typing.get_args(tp)
        non_null = [a for a in args if a is not _NoneType]
        options = [schema_of(a) for a in non_null]
        if len(non_null) < len(args):
            options.append({"type": "null"})
        return options[0] if len(options) == 1 else {"anyOf": options}
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple, set, frozenset) \
            or origin is collections.abc.Sequence:
        s = {"type": "array"}
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            s["prefixItems"] = [schema_of(a) for a in args]
            s["minItems"] = s["maxItems"] = len(args)
        elif args:
            s["items"] = schema_of(args[0])
        return s
    if origin is dict or tp is dict or (origin is not None and getattr(origin, "__name__", "") == "Mapping"):
        s = {"type": "object"}
        if len(args) == 2:
            s["additionalProperties"] = schema_of(args[1])
        return s
    if _is_pydantic(tp):
        return _inline_refs(tp.model_json_schema() if hasattr(tp, "model_json_schema") else tp.schema())
    if _is_typeddict(tp):
        hints = _hints(tp)
        required = sorted(getattr(tp, "__required_keys__", hints.keys() if tp.__total__ else ()))
        s = {"type": "object", "properties": {k: schema_of(v) for k, v in hints.items()},
             "additionalProperties": False}
        if required:
            s["required"] = required
        if tp.__doc__:
            s["description"] = inspect.cleandoc(tp.__doc__)
        return s
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = _hints(tp)
        props, required = {}, []
        for f in dataclasses.fields(tp):
            p = schema_of(hints.get(f.name, f.type))
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required.append(f.name)
            elif f.default is not dataclasses.MISSING and _json_default(f.default):
                p = dict(p, default=_jsonable_deep(f.default))
            props[f.name] = p
        s = {"type": "object", "properties": props, "additionalProperties": False}
        if required:
            s["required"] = required
        return s
    return {}


def _is_object_type(tp):
    return _is_typeddict(tp) or _is_pydantic(tp) or (dataclasses.is_dataclass(tp) and isinstance(tp, type))


# ---------------------------------------------------------- conversions

def _jsonable(value):
    """json.dumps default: dataclasses, pydantic models, tuples, sets, enums,
    numpy values."""
    if hasattr(value, "model_dump") and not isinstance(value, type):
        return value.model_dump(mode="json")
    if _is_pydantic(type(value)) and hasattr(value, "json"):
        return json.loads(value.json())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, enum.Enum):
        return value.value
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _jsonable_deep(value):
    return json.loads(json.dumps(value, default=_jsonable))


# What writes every protocol line: compact, NaN refused, the conversions
# above. One encoder for all lines (json.dumps with options builds one
# per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_jsonable, allow_nan=False)


def _convert(value, tp):
    """Build the Python value of a type hint from validated JSON."""
    if value is None or tp is inspect.Parameter.empty:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated or _is_required_marker(origin):
        return _convert(value, args[0])
    if _is_pydantic(tp) and isinstance(value, dict):
        return tp.model_validate(value) if hasattr(tp, "model_validate") else tp.parse_obj(value)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type) and isinstance(value, dict):
        hints = _hints(tp)
        return tp(**{k: _convert(v, hints.get(k, inspect.Parameter.empty)) for k, v in value.items()})
    if _is_typeddict(tp) and isinstance(value, dict):
        hints = _hints(tp)
        return {k: _convert(v, hints.get(k, inspect.Parameter.empty)) for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (origin is list or origin is set or origin is frozenset) and args and isinstance(value, list):
        items = [_convert(v, args[0]) for v in value]
        return origin(items) if origin is not list else items
    if origin is tuple and isinstance(value, list):
        if args and not (len(args) == 2 and args[1] is Ellipsis):
            return tuple(_convert(v, a) for v, a in zip(value, args))
        return tuple(_convert(v, args[0]) for v in value) if args else tuple(value)
    if origin is dict and len(args) == 2 and isinstance(value, dict):
        return {k: _convert(v, args[1]) for k, v in value.items()}
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        for a in args:
            if a is not _NoneType and _is_object_type(a) and isinstance(value, dict):
                return _convert(value, a)
            if a is float and isinstance(value, int) and not isinstance(value, bool) and int not in args:
                return float(value)
    return value


# Type hints whose value _convert returns as it is.
_PLAIN = (str, int, bool, dict, list, object, typing.Any, inspect.Parameter.empty)


def _is_plain(tp):
    return any(tp is p for p in _PLAIN)


# -------------------------------------------------------------- describe

class _Algorithm:
    def __init__(self, fn, version):
        opts = getattr(fn, "__pnpworker__", {})
        self.fn = fn
        self.name = opts.get("name") or fn.__name__[len("run_"):]
        if not _NAME.match(self.name):
            raise ValueError(f"{fn.__name__}: algorithm name {self.name!r} must be lower case letters, digits "
                             "and '_', starting with a letter")
        self.version = opts.get("version") or version
        # The docstring's first paragraph, on one line: descriptions are
        # shown in tables (pnp algorithms, nats micro ls).
        doc = (inspect.getdoc(fn) or "").split("\n\n")[0]
        self.description = opts.get("description") or " ".join(doc.split())
        self.batch = opts.get("batch")
        sig = inspect.signature(fn)
        hints = _hints(fn)
        params = [p for p in sig.parameters.values()
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY, p.POSITIONAL_ONLY)]
        self.params = [(p.name, hints.get(p.name, p.annotation), p.default) for p in params]
        # How each parameter's value is built from its JSON: None where it
        # is the JSON value itself (no conversion to look up per request).
        self.converters = [(name, None if _is_plain(tp) else tp) for name, tp, _ in self.params]
        ret = hints.get("return", sig.return_annotation)
        self.whole = None  # the type of a single parameter that is the whole input
        if self.batch:
            if len(params) != 1:
                raise ValueError(f"{fn.__name__}: a batch function takes one parameter, items: list[In]")
            tp = self.params[0][1]
            item = typing.get_args(tp)[0] if typing.get_origin(tp) in (list, typing.List) and typing.get_args(tp) else inspect.Parameter.empty
            self.whole = item
            in_schema = schema_of(item)
            ret_args = typing.get_args(ret)
            out_schema = schema_of(ret_args[0]) if typing.get_origin(ret) is list and ret_args else {}
        elif len(params) == 1 and _is_object_type(self.params[0][1]):
            self.whole = self.params[0][1]
            in_schema = schema_of(self.whole)
        else:
            props, required = {}, []
            for name, tp, default in self.params:
                s = schema_of(tp)
                if default is inspect.Parameter.empty:
                    required.append(name)
                elif _json_default(default):
                    s = dict(s, default=_jsonable_deep(default))
                props[name] = s
            in_schema = {"type": "object", "properties": props, "additionalProperties": False}
            if required:
                in_schema["required"] = required
        if not self.batch:
            out_schema = schema_of(ret) if ret is not None and ret is not _NoneType else {"type": "null"}
        self.input_schema = opts.get("input_schema") or in_schema
        self.output_schema = opts.get("output_schema") or out_schema
        self.timeout = opts.get("timeout")
        self.concurrency = opts.get("concurrency")
        if self.concurrency is None and not self.batch:
            self.concurrency = _default_concurrency()

    def descriptor(self):
        d = {"name": self.name, "version": self.version, "description": self.description,
             "input_schema": self.input_schema, "output_schema": self.output_schema}
        if self.timeout:
            d["timeout_ms"] = int(self.timeout * 1000)
        if self.concurrency:
            d["max_concurrency"] = int(self.concurrency)
        if self.batch:
            d["batch"] = self.batch
        return d

    def call(self, value):
        if self.whole is not None:
            return self.fn(_convert(value, self.whole))
        kwargs = {}
        for name, tp in self.converters:
            if name in value:
                kwargs[name] = value[name] if tp is None else _convert(value[name], tp)
        return self.fn(**kwargs)

    def call_batch(self, values):
        items = [_convert(v, self.whole) for v in values]
        outs = self.fn(items)
        outs = list(outs)
        if len(outs) != len(items):
            raise ValueError(f"batch function returned {len(outs)} outputs for {len(items)} items")
        return outs


def _default_concurrency():
    """The operator's PNP_WORKER_CONCURRENCY, else DEFAULT_CONCURRENCY."""
    raw = os.environ.get("PNP_WORKER_CONCURRENCY", "").strip()
    if not raw:
        return DEFAULT_CONCURRENCY
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"PNP_WORKER_CONCURRENCY={raw!r}: want a whole number of at least 1")
    return n


def _algorithms(module, skipped=None):
    """The algorithms of module's run_ functions, those it defines and those
    it imports. A function that cannot be served (its name is not an
    algorithm's, its signature cannot be described) is left out and its
    reason appended to skipped; without any function left, ValueError."""
    version = str(getattr(module, "VERSION", "0.0.0"))
    _default_concurrency()  # a bad PNP_WORKER_CONCURRENCY fails the whole worker
    algs, reasons = [], []
    for attr, fn in vars(module).items():
        if not (attr.startswith("run_") and inspect.isfunction(fn)):
            continue
        try:
            algs.append(_Algorithm(fn, version))
        except (ValueError, TypeError) as e:
            reasons.append(f"{attr} is not served: {e}")
    if skipped is not None:
        skipped.extend(reasons)
    if not algs:
        why = "; ".join(reasons) if reasons else "no run_<algorithm> functions"
        raise ValueError(f"module {module.__name__} has nothing to serve: {why}")
    return algs


def describe(module, algs=None):
    """The hello message for module's run_ functions (setup() not called)."""
    if algs is None:
        algs = _algorithms(module)
    return {"type": "hello", "protocol": PROTOCOL, "sdk": "pnpworker-python/" + __version__,
            "algorithms": [a.descriptor() for a in algs]}


def load(target):
    """Import a module given as a file path or a dotted module name."""
    if target.endswith(".py") or os.path.sep in target or os.path.exists(target):
        path = os.path.abspath(target)
        name = os.path.splitext(os.path.basename(path))[0]
        sys.path.insert(0, os.path.dirname(path))
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {target}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(target)


# ---------------------------------------------------------------- errors

def _client_error_status(exc):
    """The HTTP status in 400-499 that exc carries (status_code, status, or
    response.status_code, as requests' HTTPError and similar exceptions do),
    else None: such an error says the input (a URL that answers 404) is at
    fault, not the algorithm, and trying again would not help."""
    for holder in (exc, getattr(exc, "response", None)):
        if holder is None:
            continue
        for attr in ("status_code", "status"):
            try:
                value = getattr(holder, attr, None)
            except Exception:  # noqa: BLE001 - a property may raise
                continue
            if isinstance(value, bool):
                continue
            try:
                code = int(value)
            except (TypeError, ValueError):
                continue
            if 400 <= code <= 499:
                return code
    return None


def _client_error_message(exc, status):
    text = str(exc).strip()
    if not text:
        detail = getattr(exc, "detail", None) or getattr(getattr(exc, "response", None), "reason", None)
        text = str(detail) if detail else type(exc).__name__
    if str(status) not in text:
        text = f"{text} (HTTP {status})"
    return text


# ---------------------------------------------------------------- serving

_server = None


class _Flag:
    """A request's cancel flag: set once, read by cancelled(). Cheaper than a
    threading.Event, which no one waits on here."""

    __slots__ = ("_set",)

    def __init__(self):
        self._set = False

    def set(self):
        self._set = True

    def is_set(self):
        return self._set


# How long a request runs in the thread that read it before another thread
# takes over reading stdin, in seconds (between one and two ticks). A
# request is run by the thread that read its line: no hand-off between
# threads for a request that is quick. One that takes longer (it waits for
# I/O, or a model computes) lets another thread read on, so that cancels
# and the requests the runner sends next are served meanwhile, up to the
# algorithms' concurrency.
TAKEOVER_TICK = 0.001
# The monitor stops looking after this many ticks without a request
# running, until one starts: an idle worker costs no CPU.
_IDLE_TICKS = 200


class _Server:
    def __init__(self, algs, out):
        self.algs = {a.name: a for a in algs}
        self.out = out
        self.lock = threading.Lock()  # the output: unwritten lines, writes
        self.unwritten = []
        self.cancels = {}
        self.cancels_lock = threading.Lock()
        # A thread per request that runs at once, and one to read: what
        # the runner sends at most (each algorithm's concurrency) is never
        # left waiting for a thread.
        self.max_threads = min(256, sum(a.concurrency or 2 for a in algs) + 2)
        # Who reads stdin: the leader, one thread at a time. The fields
        # below are guarded by self.mu.
        self.mu = threading.Lock()
        self.followers = threading.Condition(self.mu)  # idle threads wait here
        self.wake_monitor = threading.Condition(self.mu)
        self.leader = None  # the thread ident of the reader
        self.running = False  # the leader runs a request
        self.runs = 0  # requests the leader started
        self.idle = 0  # threads waiting in followers
        self.monitor_asleep = False
        self.eof = False
        self.threads = []
        self.lines = collections.deque()  # lines read and not yet handled
        self.partial = []  # the start of a line not yet complete, in chunks

    def send(self, msg):
        try:
            line = _ENCODER.encode(msg)
        except (TypeError, ValueError, RecursionError) as e:
            if "id" not in msg or msg.get("type") == "error":
                raise
            line = json.dumps({"type": "error", "id": msg["id"], "code": 500,
                               "message": "output is not JSON: " + str(e),
                               "detail": traceback.format_exc()}, separators=(",", ":"))
        data = (line + "\n").encode("utf-8")
        with self.lock:
            self.unwritten.append(data)
            # The reader writes after the lines it read already: one write
            # for all of them. Anyone else writes at once.
            if self.lines and self.leader == threading.get_ident():
                return
            self._write()

    def _write(self):
        """Write the unwritten lines; self.lock is held."""
        data = self.unwritten[0] if len(self.unwritten) == 1 else b"".join(self.unwritten)
        self.unwritten.clear()
        self.out.write(data)
        self.out.flush()

    def flush(self):
        with self.lock:
            if self.unwritten:
                self._write()

    def _error(self, rid, exc):
        if isinstance(exc, Reject):
            return {"type": "error", "id": rid, "code": 422, "message": exc.message}
        status = _client_error_status(exc)
        if status is not None:
            return {"type": "error", "id": rid, "code": 422, "message": _client_error_message(exc, status)}
        return {"type": "error", "id": rid, "code": 500, "message": f"{type(exc).__name__}: {exc}",
                "detail": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}

    def handle(self, msg):
        rid = msg.get("id")
        alg = self.algs.get(msg.get("algorithm"))
        ev = _Flag()
        with self.cancels_lock:
            self.cancels[rid] = ev
        _local.cancel, _local.id, _local.job_id = ev, rid, msg.get("job_id")
        _local.algorithm = alg.name if alg else None
        try:
            if alg is None:
                self.send({"type": "error", "id": rid, "code": 404,
                           "message": f"no algorithm {msg.get('algorithm')!r} in this worker"})
            elif msg.get("type") == "batch":
                self._batch(alg, rid, msg.get("inputs") or [])
            else:
                try:
                    out = alg.call(msg.get("input") or {})
                except BaseException as e:  # noqa: B036 - the worker keeps serving
                    if isinstance(e, (KeyboardInterrupt, SystemExit)):
                        raise
                    self.send(self._error(rid, e))
                else:
                    self.send({"type": "result", "id": rid, "output": out})
        finally:
            _local.cancel = _local.id = _local.job_id = _local.algorithm = None
            with self.cancels_lock:
                self.cancels.pop(rid, None)

    def _batch(self, alg, rid, inputs):
        try:
            outs = alg.call_batch(inputs)
        except Exception as e:
            err = self._error(rid, e)
            item = {"code": err["code"], "message": err["message"]}
            if "detail" in err:
                item["detail"] = err["detail"]
            self.send({"type": "result", "id": rid, "results": [{"error": item} for _ in inputs]})
            return
        results = []
        for out in outs:
            if isinstance(out, Exception):
                e = self._error(rid, out)
                results.append({"error": {k: e[k] for k in ("code", "message", "detail") if k in e}})
            else:
                results.append({"output": out})
        self.send({"type": "result", "id": rid, "results": results})

    def cancel(self, rid):
        with self.cancels_lock:
            ev = self.cancels.get(rid)
        if ev is not None:
            ev.set()

    def refuse(self, raw, why):
        """Answer the request on a line that cannot be read with a 400, or
        note the line on stderr when it names no request."""
        m = _LINE_ID.match(raw.encode("utf-8", "replace") if isinstance(raw, str) else raw)
        if m is None:
            print(f"pnpworker: ignoring a line that cannot be read ({why}): {raw[:200]!r}", file=sys.stderr)
            return
        self.send({"type": "error", "id": m.group(1).decode("utf-8", "replace"), "code": 400, "message": why})

    def read(self, raw):
        """Parse one line from the runner and act on it; a request or batch
        is returned, to be handled by the caller. Whatever the line holds,
        the process keeps serving: input it cannot read is a 400."""
        try:
            # Decoded here: json.loads of bytes first guesses their
            # encoding, a third of its time on a small line.
            msg = json.loads(raw.decode("utf-8", "surrogatepass") if isinstance(raw, bytes) else raw, **_LOADS_OPTIONS)
        except RecursionError:
            self.refuse(raw, "input nests deeper than this worker's JSON parser allows "
                             f"(Python's recursion limit, {sys.getrecursionlimit()})")
            return None
        except _InputTooLarge as e:
            self.refuse(raw, str(e))
            return None
        except ValueError as e:
            why = f"input is not JSON this worker can read: {e}"
            try:
                json.loads(raw, parse_int=_parse_int)
            except _InputTooLarge as too_large:
                why = str(too_large)
            except (ValueError, RecursionError):
                pass
            self.refuse(raw, why)
            return None
        if not isinstance(msg, dict):
            print(f"pnpworker: ignoring a line that is not a JSON object: {raw[:200]!r}", file=sys.stderr)
            return None
        kind = msg.get("type")
        if kind in ("request", "batch"):
            return msg
        if kind == "cancel":
            self.cancel(msg.get("id"))
        return None

    def run(self, inp):
        """Serve the lines of inp (a binary file, or an iterable of lines)
        until it ends, then finish the requests in flight."""
        read1 = getattr(inp, "read1", None)
        if read1 is not None:
            self._read_chunk = lambda: read1(1 << 16)
        else:
            it = iter(inp)

            def next_line():
                line = next(it, b"")
                line = line.encode("utf-8") if isinstance(line, str) else line
                return line if line.endswith(b"\n") or not line else line + b"\n"

            self._read_chunk = next_line
        monitor = threading.Thread(target=self._monitor, name="pnpworker-monitor", daemon=True)
        monitor.start()
        self._thread()
        # stdin closed: no more requests; finish those in flight.
        with self.mu:
            threads = list(self.threads)
        for t in threads:
            t.join()
        monitor.join()
        self.flush()

    def _thread(self):
        """A serving thread: the reader while it is the leader, else idle
        until it is needed."""
        me = threading.get_ident()
        while True:
            with self.mu:
                while self.leader != me:
                    if self.eof:
                        return
                    if self.leader is None:
                        self.leader = me
                        break
                    self.idle += 1
                    self.followers.wait()
                    self.idle -= 1
            try:
                displaced = self._lead(me)
            except BaseException:
                # SystemExit or KeyboardInterrupt from a request: this
                # thread ends, and another reads.
                with self.mu:
                    if self.leader == me:
                        self.leader, self.running = None, False
                        self.followers.notify()
                raise
            if not displaced:
                return

    def _lead(self, me):
        """Read and handle lines until stdin ends (False) or another thread
        took over reading while this one ran a request (True)."""
        while True:
            raw = self._next_line()
            if raw is None:
                with self.mu:
                    self.eof = True
                    self.leader = None
                    self.followers.notify_all()
                    self.wake_monitor.notify_all()
                return False
            try:
                msg = self.read(raw)
            except Exception:  # noqa: BLE001 - one line must not end the process
                log("pnpworker: failed to handle a line:\n" + traceback.format_exc(), "error")
                continue
            if msg is None:
                continue
            with self.mu:
                self.running = True
                self.runs += 1
                if self.monitor_asleep:
                    self.wake_monitor.notify()
            try:
                self.handle(msg)
            except Exception:  # noqa: BLE001 - handle answers its own errors
                log("pnpworker: failed to handle a request:\n" + traceback.format_exc(), "error")
            finally:
                with self.mu:
                    displaced = self.leader != me
                    if not displaced:
                        self.running = False
            if displaced:
                self.flush()
                return True

    def _next_line(self):
        """The next line from the runner; None once stdin ended. Lines read
        and not handled yet come first; before waiting for more input the
        replies not yet written are written."""
        lines = self.lines
        while not lines:
            self.flush()
            chunk = self._read_chunk()
            if not chunk:
                rest = b"".join(self.partial)
                self.partial.clear()
                return rest if rest.strip() else None
            if b"\n" not in chunk:
                self.partial.append(chunk)  # joined once the line is whole
                continue
            parts = chunk.split(b"\n")
            if self.partial:
                self.partial.append(parts[0])
                parts[0] = b"".join(self.partial)
                self.partial.clear()
            if parts[-1]:
                self.partial.append(parts[-1])
            for line in parts[:-1]:
                if line and not line.isspace():
                    lines.append(line)
        return lines.popleft()

    def _monitor(self):
        """Let another thread read stdin once the leader has been running
        one request for a tick (between one and two TAKEOVER_TICKs)."""
        seen, quiet = -1, 0
        while True:
            slow = False
            with self.mu:
                if self.eof:
                    return
                if self.running and self.runs == seen:
                    self._take_over()
                    seen, slow = -1, True
                elif self.running:
                    seen, quiet = self.runs, 0
                else:
                    seen, quiet = -1, quiet + 1
                    if quiet >= _IDLE_TICKS:
                        self.monitor_asleep = True
                        self.wake_monitor.wait()
                        self.monitor_asleep = False
                        quiet = 0
                        continue
            if slow:
                # Answers the leader held back for the lines after them
                # do not wait for a slow request.
                self.flush()
            time.sleep(TAKEOVER_TICK)

    def _take_over(self):
        """Make another thread the reader; self.mu is held. Without a
        thread to spare (every one runs a request), the leader reads on
        once its request is done."""
        if self.idle:
            self.leader, self.running = None, False
            self.followers.notify()
        elif len(self.threads) + 1 < self.max_threads:
            self.leader, self.running = None, False
            t = threading.Thread(target=self._thread, name="pnpworker", daemon=True)
            self.threads.append(t)
            t.start()


_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn",
           logging.ERROR: "error", logging.CRITICAL: "error"}


class _LogHandler(logging.Handler):
    """Sends logging records to the runner's log, one entry per record, its
    traceback (exc_info) included in the message."""

    def emit(self, record):
        try:
            message = self.format(record)
            level = _LEVELS.get(record.levelno) or ("error" if record.levelno > logging.ERROR else "info")
            log(message, level)
        except Exception:  # noqa: BLE001 - logging must not break serving
            self.handleError(record)


_log_handler = None


def _install_logging():
    """Route logging to the runner's log unless the program set up logging
    itself (handlers on the root logger): then its own choice stands."""
    global _log_handler
    root = logging.getLogger()
    if _log_handler is not None or root.handlers:
        return
    _log_handler = _LogHandler()
    _log_handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root.addHandler(_log_handler)
    if root.level == logging.WARNING:  # the default: nobody chose one
        root.setLevel(logging.INFO)


def _keep_logging_choice():
    """After the module was imported: if it configured logging (another
    root handler), remove ours so records are not written twice."""
    global _log_handler
    root = logging.getLogger()
    if _log_handler is not None and any(h is not _log_handler for h in root.handlers):
        root.removeHandler(_log_handler)
        _log_handler = None


def _protocol_stdout():
    """Keep a private handle on the real stdout for protocol lines and send
    everything else written to stdout (print, C code) to stderr."""
    sys.stdout.flush()
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "wb")


def serve(module, inp=None, out=None):
    """Run setup(), say hello, and serve module's run_ functions until the
    input ends. inp and out default to stdin and the process's real stdout
    (protected as the module docstring says)."""
    global _server
    skipped = []
    algs = _algorithms(module, skipped)
    if out is None:
        out = _protocol_stdout()
    if inp is None:
        inp = os.fdopen(0, "rb")
    srv = _Server(algs, out)
    _server = srv
    for why in skipped:
        log(why, "warn")
    setup = getattr(module, "setup", None)
    if callable(setup):
        setup()
    srv.send(describe(module, algs))
    srv.run(inp)


def main(argv=None):
    """Command line: pnpworker.py [--describe] PATH_OR_MODULE."""
    argv = list(sys.argv[1:] if argv is None else argv)
    describe_only = "--describe" in argv
    argv = [a for a in argv if a != "--describe"]
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    # The served module must see this file as "pnpworker", not "__main__",
    # so that its Reject and decorators are the ones used here.
    this = sys.modules.get("pnpworker") or sys.modules[__name__]
    sys.modules.setdefault("pnpworker", this)
    if describe_only:
        skipped = []
        module = load(argv[0])
        hello = describe(module, _algorithms(module, skipped))
        for why in skipped:
            print("pnpworker: " + why, file=sys.stderr)
        print(json.dumps(hello, indent=2))
        return 0
    # Protect stdout before the module is imported: output at import time
    # goes to stderr too. Log messages may precede the hello.
    out = _protocol_stdout()
    global _server
    _server = _Server([], out)
    _install_logging()
    module = load(argv[0])
    _keep_logging_choice()
    serve(module, out=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
