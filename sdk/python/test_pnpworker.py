"""Tests of pnpworker.py. Run: python3 -m unittest discover -s sdk/python"""

import dataclasses
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import types
import unittest
from unittest import mock
from typing import Dict, List, Literal, Optional, TypedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pnpworker  # noqa: E402

SDK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pnpworker.py")


class Point(TypedDict):
    x: float
    y: float


@dataclasses.dataclass
class Box:
    corner: Point
    label: str = "box"
    tags: List[str] = dataclasses.field(default_factory=list)


def module(source, name="adapter", **env):
    """A module made of source, with env's names defined first."""
    m = types.ModuleType(name)
    m.__dict__.update(env)
    exec(textwrap.dedent(source), m.__dict__)
    return m


class SchemaTest(unittest.TestCase):
    def test_types(self):
        cases = [
            (str, {"type": "string"}),
            (int, {"type": "integer"}),
            (float, {"type": "number"}),
            (bool, {"type": "boolean"}),
            (list[int], {"type": "array", "items": {"type": "integer"}}),
            (List[str], {"type": "array", "items": {"type": "string"}}),
            (dict[str, float], {"type": "object", "additionalProperties": {"type": "number"}}),
            (Dict[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}),
            (Optional[int], {"anyOf": [{"type": "integer"}, {"type": "null"}]}),
            (Literal["a", "b"], {"enum": ["a", "b"]}),
            (dict, {"type": "object"}),
            (Point, {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                     "additionalProperties": False, "required": ["x", "y"]}),
        ]
        for tp, want in cases:
            with self.subTest(tp=tp):
                self.assertEqual(pnpworker.schema_of(tp), want)

    def test_dataclass(self):
        s = pnpworker.schema_of(Box)
        self.assertEqual(s["required"], ["corner"])
        self.assertEqual(s["properties"]["label"], {"type": "string", "default": "box"})
        self.assertEqual(s["properties"]["corner"]["type"], "object")
        self.assertFalse(s["additionalProperties"])

    @unittest.skipIf(sys.version_info < (3, 10), "X | Y needs Python 3.10")
    def test_pipe_union(self):
        self.assertEqual(pnpworker.schema_of(eval("int | None")), {"anyOf": [{"type": "integer"}, {"type": "null"}]})


ADAPTER = '''
from typing import Optional
import pnpworker

VERSION = "1.2.0"
calls = []

def setup():
    calls.append("setup")

def run_greet(name: str, times: int = 2, suffix: Optional[str] = None) -> dict:
    """Greets
    someone.

    Not part of the description."""
    return {"text": " ".join([name] * times) + (suffix or "")}

def run_picky(word: str) -> dict:
    if word == "boom":
        raise ValueError("it went boom")
    raise pnpworker.Reject(f"not {word}")

def run_wait(ms: int) -> dict:
    end = time.monotonic() + ms / 1000
    while time.monotonic() < end:
        if pnpworker.cancelled():
            return {"cancelled": True}
        time.sleep(0.005)
    return {"cancelled": False}

@pnpworker.batch(max_size=8, max_wait_ms=2)
def run_double(items: list[int]) -> list[int]:
    return [pnpworker.Reject("odd") if i % 2 else 2 * i for i in items]

@pnpworker.algorithm(name="renamed", timeout=2.5, concurrency=1)
def run_other(box: Box) -> Box:
    return box

def helper(x: int) -> int:
    return x
'''


def adapter():
    return module(ADAPTER, time=time, Box=Box)


class DescribeTest(unittest.TestCase):
    def test_hello(self):
        hello = pnpworker.describe(adapter())
        self.assertEqual(hello["type"], "hello")
        self.assertEqual(hello["protocol"], 1)
        algs = {a["name"]: a for a in hello["algorithms"]}
        self.assertEqual(sorted(algs), ["double", "greet", "picky", "renamed", "wait"])
        g = algs["greet"]
        self.assertEqual(g["version"], "1.2.0")
        self.assertEqual(g["description"], "Greets someone.")
        self.assertEqual(g["input_schema"]["required"], ["name"])
        self.assertEqual(g["input_schema"]["properties"]["times"], {"type": "integer", "default": 2})
        self.assertFalse(g["input_schema"]["additionalProperties"])
        self.assertEqual(g["output_schema"], {"type": "object"})
        self.assertEqual(g["max_concurrency"], pnpworker.DEFAULT_CONCURRENCY)
        d = algs["double"]
        self.assertEqual(d["batch"], {"max_size": 8, "max_wait_ms": 2.0})
        self.assertEqual(d["input_schema"], {"type": "integer"})
        self.assertEqual(d["output_schema"], {"type": "integer"})
        r = algs["renamed"]
        self.assertEqual((r["timeout_ms"], r["max_concurrency"]), (2500, 1))
        # A single dataclass parameter is the whole input.
        self.assertEqual(r["input_schema"]["required"], ["corner"])

    def test_bad_name(self):
        m = module("def run_Bad(x: int) -> int:\n    return x\n")
        with self.assertRaises(ValueError):
            pnpworker.describe(m)

    def test_no_functions(self):
        with self.assertRaises(ValueError):
            pnpworker.describe(module("x = 1\n"))

    def test_bad_name_skips_only_that_function(self):
        # run_OCR cannot be an algorithm's name: it is left out with a
        # reason, and run_echo is served.
        m = module("def run_OCR(x: int) -> int:\n    return x\n\ndef run_echo(x: int) -> int:\n    return x\n")
        skipped = []
        algs = pnpworker._algorithms(m, skipped)
        self.assertEqual([a.name for a in algs], ["echo"])
        self.assertEqual(len(skipped), 1)
        self.assertIn("run_OCR is not served", skipped[0])
        self.assertIn("'OCR'", skipped[0])

    def test_imported_functions_are_served(self):
        # An adapter that imports its run_ functions from another module
        # serves them, as one that defines them does.
        lib = module("def run_add_numbers(a: int, b: int) -> int:\n    return a + b\n", name="lib")
        m = module("", run_add_numbers=lib.run_add_numbers)
        self.assertEqual([a["name"] for a in pnpworker.describe(m)["algorithms"]], ["add_numbers"])

    def test_concurrency(self):
        m = module("import pnpworker\n"
                   "def run_plain(x: int) -> int:\n    return x\n"
                   "@pnpworker.algorithm(concurrency=3)\ndef run_safe(x: int) -> int:\n    return x\n",
                   pnpworker=pnpworker)
        def conc(env):
            with mock.patch.dict(os.environ, env):
                return {a["name"]: a["max_concurrency"] for a in pnpworker.describe(m)["algorithms"]}
        env = {k: v for k, v in os.environ.items() if k != "PNP_WORKER_CONCURRENCY"}
        with mock.patch.dict(os.environ, env, clear=True):
            self.assertEqual(conc({}), {"plain": 1, "safe": 3})
            # The operator's choice applies where the author said nothing.
            self.assertEqual(conc({"PNP_WORKER_CONCURRENCY": "6"}), {"plain": 6, "safe": 3})
            for bad in ("0", "x", "-2"):
                with self.subTest(bad=bad), self.assertRaisesRegex(ValueError, "PNP_WORKER_CONCURRENCY"):
                    conc({"PNP_WORKER_CONCURRENCY": bad})

    def test_version_is_the_protocols(self):
        self.assertEqual(int(pnpworker.__version__.split(".")[0]), pnpworker.PROTOCOL)


class OptionalKeysTest(unittest.TestCase):
    def test_total_false(self):
        class Opts(TypedDict, total=False):
            lang: str
            limit: int

        class Req(Opts):
            text: str

        s = pnpworker.schema_of(Req)
        self.assertEqual(s["required"], ["text"])
        self.assertEqual(set(s["properties"]), {"text", "lang", "limit"})
        self.assertNotIn("required", pnpworker.schema_of(Opts))

    @unittest.skipIf(sys.version_info < (3, 11), "typing.NotRequired needs Python 3.11")
    def test_not_required(self):
        from typing import NotRequired, Required

        class Req(TypedDict):
            text: str
            lang: NotRequired[str]

        class Loose(TypedDict, total=False):
            text: Required[str]
            limit: int

        s = pnpworker.schema_of(Req)
        self.assertEqual(s["required"], ["text"])
        self.assertEqual(s["properties"]["lang"], {"type": "string"})
        l = pnpworker.schema_of(Loose)
        self.assertEqual(l["required"], ["text"])
        self.assertEqual(l["properties"]["text"], {"type": "string"})
        # The input is built without the absent key.
        m = module("def run_t(req: Req) -> dict:\n    return dict(req)\n", Req=Req)
        sent = serve(m, [{"type": "request", "id": "1", "algorithm": "t", "input": {"text": "hi"}}])
        self.assertEqual(sent[1]["output"], {"text": "hi"})


class RecordingOut:
    """An output that keeps each write apart."""

    def __init__(self):
        self.writes = []

    def write(self, data):
        self.writes.append(bytes(data))

    def flush(self):
        pass


def serve(m, messages, wait=None):
    """Serve m on the given request messages; return the messages sent,
    hello first. wait, if set, is called before stdin ends."""
    r, w = os.pipe()
    out = io.BytesIO()

    def feed():
        with os.fdopen(w, "wb") as f:
            for msg in messages:
                if callable(msg):
                    msg()
                    continue
                line = msg if isinstance(msg, str) else json.dumps(msg)
                f.write((line + "\n").encode())
                f.flush()
            if wait:
                wait()

    t = threading.Thread(target=feed)
    t.start()
    with os.fdopen(r, "rb") as inp:
        pnpworker.serve(m, inp=inp, out=out)
    t.join()
    return [json.loads(line) for line in out.getvalue().decode().splitlines()]


class ServeTest(unittest.TestCase):
    def test_requests(self):
        m = adapter()
        sent = serve(m, [
            {"type": "request", "id": "1", "algorithm": "greet", "input": {"name": "ab", "suffix": "!"}},
            {"type": "request", "id": "2", "algorithm": "picky", "input": {"word": "x"}},
            {"type": "request", "id": "3", "algorithm": "picky", "input": {"word": "boom"}},
            {"type": "request", "id": "4", "algorithm": "nope", "input": {}},
            {"type": "batch", "id": "5", "algorithm": "double", "inputs": [1, 2, 4]},
            {"type": "request", "id": "6", "algorithm": "renamed",
             "input": {"corner": {"x": 1, "y": 2}, "tags": ["a"]}},
        ])
        self.assertEqual(m.calls, ["setup"])
        self.assertEqual(sent[0]["type"], "hello")
        by_id = {s["id"]: s for s in sent[1:]}
        self.assertEqual(by_id["1"], {"type": "result", "id": "1", "output": {"text": "ab ab!"}})
        self.assertEqual(by_id["2"], {"type": "error", "id": "2", "code": 422, "message": "not x"})
        self.assertEqual(by_id["3"]["code"], 500)
        self.assertIn("Traceback", by_id["3"]["detail"])
        self.assertIn("it went boom", by_id["3"]["detail"])
        self.assertEqual(by_id["4"]["code"], 404)
        self.assertEqual(by_id["5"]["results"], [
            {"error": {"code": 422, "message": "odd"}}, {"output": 4}, {"output": 8}])
        self.assertEqual(by_id["6"]["output"], {"corner": {"x": 1, "y": 2}, "label": "box", "tags": ["a"]})

    def test_cancel(self):
        sent = serve(adapter(), [
            {"type": "request", "id": "1", "algorithm": "wait", "input": {"ms": 5000}},
            lambda: time.sleep(0.2),
            {"type": "cancel", "id": "1"},
        ])
        self.assertEqual(sent[1], {"type": "result", "id": "1", "output": {"cancelled": True}})

    def test_a_slow_request_does_not_hold_up_the_next(self):
        # The thread that reads a request runs it; one that runs longer
        # than a tick lets another thread read on. Here the first request
        # returns only once the second has run, so a reader that kept
        # running what it read would never get to the second (and the
        # first would time out).
        second_ran = threading.Event()
        m = module('''
            @pnpworker.algorithm(concurrency=2)
            def run_first() -> dict:
                return {"second_ran": second_ran.wait(10)}

            @pnpworker.algorithm(concurrency=2)
            def run_second() -> dict:
                second_ran.set()
                return {}
            ''', pnpworker=pnpworker, second_ran=second_ran)
        sent = serve(m, [
            {"type": "request", "id": "1", "algorithm": "first", "input": {}},
            lambda: time.sleep(0.05),
            {"type": "request", "id": "2", "algorithm": "second", "input": {}},
        ])
        by_id = {s["id"]: s for s in sent[1:]}
        self.assertEqual(by_id["1"]["output"], {"second_ran": True})
        self.assertEqual(by_id["2"]["output"], {})
        # The second was answered first, while the first still ran.
        self.assertEqual([s["id"] for s in sent[1:]], ["2", "1"])

    def test_lines_read_together_are_answered_in_one_write(self):
        m = adapter()
        r, w = os.pipe()
        out = RecordingOut()
        writes = out.writes

        lines = b"".join(json.dumps({"type": "request", "id": str(i), "algorithm": "greet",
                                     "input": {"name": "n" + str(i)}}).encode() + b"\n"
                         for i in range(3))

        def answered():
            return sum(x.count(b'"type":"result"') for x in writes[1:])

        def feed():
            # Once the hello is out the server waits in its read, and the
            # three lines arrive in one read: one write to a pipe, below
            # PIPE_BUF, is atomic.
            deadline = time.monotonic() + 10
            while not writes and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.05)
            os.write(w, lines)
            while answered() < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            os.close(w)

        t = threading.Thread(target=feed)
        t.start()
        with os.fdopen(r, "rb") as inp:
            pnpworker.serve(m, inp=inp, out=out)
        t.join()
        self.assertEqual(len(writes), 2, writes)  # the hello, then all three replies
        replies = [json.loads(x) for x in writes[1].splitlines()]
        self.assertEqual([x["output"]["text"] for x in replies], ["n0 n0", "n1 n1", "n2 n2"])

    def test_a_held_answer_does_not_wait_for_a_slow_request(self):
        # The answer to a line is held back while more lines read with it
        # wait; when the next one runs long, it is written anyway, even
        # with no thread to spare for reading.
        out = RecordingOut()
        writes = out.writes

        def answered_quick():
            return any(b'"id":"1"' in x for x in writes)

        m = module('''
            @pnpworker.algorithm(concurrency=2)
            def run_quick() -> dict:
                return {}

            @pnpworker.algorithm(concurrency=2)
            def run_slow() -> dict:
                deadline = time.monotonic() + 10
                while not answered_quick() and time.monotonic() < deadline:
                    time.sleep(0.005)
                return {"saw_quick": answered_quick()}
            ''', pnpworker=pnpworker, time=time, answered_quick=answered_quick)
        algs = pnpworker._algorithms(m)
        srv = pnpworker._Server(algs, out)
        srv.max_threads = 1  # no other thread may take over reading
        lines = (b'{"type":"request","id":"1","algorithm":"quick","input":{}}\n'
                 b'{"type":"request","id":"2","algorithm":"slow","input":{}}\n')
        srv.run([lines.decode()])
        sent = [json.loads(line) for x in writes for line in x.splitlines()]
        self.assertEqual({s["id"]: s.get("output") for s in sent}, {"1": {}, "2": {"saw_quick": True}})

    def test_a_line_split_over_reads(self):
        # A line arrives in pieces (a long input, or a write that the
        # pipe split); it is read whole, and so is the line after it.
        r, w = os.pipe()
        text = "x" * (300 << 10)  # more than a pipe holds
        first = json.dumps({"type": "request", "id": "1", "algorithm": "greet",
                            "input": {"name": text, "times": 1}}).encode()

        def feed():
            with os.fdopen(w, "wb", buffering=0) as f:
                f.write(first[:10])
                time.sleep(0.05)
                f.write(first[10:] + b"\n" + b'{"type":"request","id":"2","algorithm":"greet"')
                time.sleep(0.05)
                f.write(b',"input":{"name":"b"}}\n')

        t = threading.Thread(target=feed)
        t.start()
        out = io.BytesIO()
        with os.fdopen(r, "rb") as inp:
            pnpworker.serve(adapter(), inp=inp, out=out)
        t.join()
        sent = [json.loads(line) for line in out.getvalue().splitlines()]
        by_id = {s["id"]: s for s in sent[1:]}
        self.assertEqual(by_id["1"]["output"], {"text": text})
        self.assertEqual(by_id["2"]["output"], {"text": "b b"})

    def test_unreadable_input_is_a_400(self):
        # Valid JSON that Python's parser cannot read (nested past its
        # recursion limit, an integer past 4300 digits) answers that
        # request 400 and the process serves on.
        # Both ways the SDK reads lines: the C parser's own digit limit
        # (Python >= 3.11), and the parse_int hook (older Pythons).
        for options in ({}, {"parse_int": pnpworker._parse_int}):
            with self.subTest(options=options), mock.patch.object(pnpworker, "_LOADS_OPTIONS", options):
                self.check_unreadable_input()

    def check_unreadable_input(self):
        deep = "[" * 2000 + "]" * 2000
        big = "1" + "0" * 5000
        sent = serve(adapter(), [
            '{"type":"request","id":"deep","algorithm":"picky","input":{"word":' + deep + '}}',
            '{"type": "batch", "id": "deepbatch", "algorithm": "double", "inputs": [' + deep + ']}',
            '{"type":"request","id":"big","algorithm":"greet","input":{"name":"a","times":' + big + '}}',
            '{"type":"request","id":"negative","algorithm":"greet","input":{"name":"a","times":-' + big + '}}',
            '[1, 2]',
            '{"type":"request","id":"broken","algorithm":"greet","input":{',
            {"type": "request", "id": "after", "algorithm": "greet", "input": {"name": "ok"}},
        ])
        by_id = {s["id"]: s for s in sent[1:]}
        for rid, want in (("deep", "nests deeper"), ("deepbatch", "nests deeper"),
                          ("big", "integer of 5001 digits"), ("negative", "integer of 5001 digits"),
                          ("broken", "not JSON")):
            with self.subTest(rid):
                self.assertEqual(by_id[rid]["type"], "error")
                self.assertEqual(by_id[rid]["code"], 400)
                self.assertIn(want, by_id[rid]["message"])
        self.assertEqual(by_id["after"]["output"], {"text": "ok ok"})

    def test_output_too_deep(self):
        # An output json.dumps cannot write is a 500 for that request, not
        # a request left unanswered.
        m = module("def run_deep() -> list:\n    v = []\n    for _ in range(5000):\n        v = [v]\n    return v\n")
        sent = serve(m, [{"type": "request", "id": "1", "algorithm": "deep", "input": {}}])
        self.assertEqual(sent[1]["code"], 500)

    def test_output_not_json(self):
        m = module("def run_nan() -> float:\n    return float('nan')\n")
        sent = serve(m, [{"type": "request", "id": "1", "algorithm": "nan", "input": {}}])
        self.assertEqual(sent[1]["code"], 500)


try:
    import pydantic
except ImportError:  # pydantic is optional: the SDK never imports it
    pydantic = None


@unittest.skipIf(pydantic is None, "pydantic is not installed")
class PydanticTest(unittest.TestCase):
    """Runner adapters written for a FastAPI runner take pydantic models."""

    def test_model_parameter(self):
        class Corner(pydantic.BaseModel):
            x: float
            y: float

        class Req(pydantic.BaseModel):
            corner: Corner
            label: str = "box"

        class Resp(pydantic.BaseModel):
            area: float

        def run_area(req: Req) -> Resp:
            return Resp(area=req.corner.x * req.corner.y)

        m = module("", Req=Req, Resp=Resp)
        run_area.__module__ = m.__name__
        m.run_area = run_area
        alg = pnpworker.describe(m)["algorithms"][0]
        inp = alg["input_schema"]
        self.assertEqual(inp["required"], ["corner"])
        self.assertEqual(inp["properties"]["corner"]["properties"]["x"]["type"], "number")
        self.assertNotIn("$ref", json.dumps(inp))
        self.assertEqual(alg["output_schema"]["properties"]["area"]["type"], "number")
        sent = serve(m, [{"type": "request", "id": "1", "algorithm": "area", "input": {"corner": {"x": 2, "y": 3}}}])
        self.assertEqual(sent[1]["output"], {"area": 6.0})


class ClientErrorTest(unittest.TestCase):
    """An exception that carries an HTTP status in 400-499 is the input's
    fault: 422 with its message, which the controller does not retry."""

    def test_statuses(self):
        class Response:
            def __init__(self, code):
                self.status_code = code
                self.reason = "Not Found"

        class HTTPError(Exception):  # requests' shape: the response rides along
            def __init__(self, message, response):
                super().__init__(message)
                self.response = response

        class RequestError(Exception):  # a status of its own
            def __init__(self, status):
                super().__init__(f"image request failed with status {status}")
                self.status = status

        class APIError(Exception):
            status_code = 403

        m = module('''
def run_fetch(kind: str) -> dict:
    if kind == "requests":
        raise HTTPError("404 Client Error: Not Found for url: http://x/y.png", Response(404))
    if kind == "article":
        raise RequestError(404)
    if kind == "api":
        raise APIError()
    if kind == "server":
        raise HTTPError("503 Server Error", Response(503))
    if kind == "bool":
        e = ValueError("odd")
        e.status = True
        raise e
    return {}
''', HTTPError=HTTPError, Response=Response, RequestError=RequestError, APIError=APIError)
        sent = serve(m, [{"type": "request", "id": k, "algorithm": "fetch", "input": {"kind": k}}
                         for k in ("requests", "article", "api", "server", "bool")])
        by_id = {s["id"]: s for s in sent[1:]}
        self.assertEqual(by_id["requests"], {"type": "error", "id": "requests", "code": 422,
                                             "message": "404 Client Error: Not Found for url: http://x/y.png"})
        self.assertEqual(by_id["article"]["code"], 422)
        self.assertEqual(by_id["article"]["message"], "image request failed with status 404")
        self.assertEqual(by_id["api"]["code"], 422)
        self.assertEqual(by_id["api"]["message"], "APIError (HTTP 403)")
        # A server's error and a status that is not a number stay 500s.
        self.assertEqual(by_id["server"]["code"], 500)
        self.assertEqual(by_id["bool"]["code"], 500)


class LoggingTest(unittest.TestCase):
    def test_records_reach_the_runner_once_each(self):
        # Without logging set up by the module, a record is one log
        # message, its traceback included.
        root = logging.getLogger()
        saved = (root.handlers[:], root.level)
        root.handlers[:] = []
        try:
            pnpworker._install_logging()
            m = module('''
import logging
log = logging.getLogger("adapter")
def run_lg(x: int) -> int:
    log.info("got %d", x)
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("failed on %d", x)
    return x
''')
            sent = serve(m, [{"type": "request", "id": "1", "algorithm": "lg", "input": {"x": 7}}])
        finally:
            if pnpworker._log_handler is not None:
                root.removeHandler(pnpworker._log_handler)
                pnpworker._log_handler = None
            root.handlers[:], root.level = saved
        logs = [s for s in sent if s["type"] == "log"]
        self.assertEqual([(l["level"], l["message"].splitlines()[0]) for l in logs],
                         [("info", "adapter: got 7"), ("error", "adapter: failed on 7")])
        self.assertIn("Traceback (most recent call last):", logs[1]["message"])
        self.assertIn("ZeroDivisionError", logs[1]["message"])
        self.assertEqual(logs[1]["algorithm"], "lg")
        self.assertEqual(logs[1]["id"], "1")

    def test_module_choice_stands(self):
        root = logging.getLogger()
        saved = (root.handlers[:], root.level)
        root.handlers[:] = []
        try:
            pnpworker._install_logging()
            own = logging.StreamHandler(io.StringIO())
            root.addHandler(own)  # as logging.basicConfig in the module would
            pnpworker._keep_logging_choice()
            self.assertEqual(root.handlers, [own])
        finally:
            root.handlers[:], root.level = saved
            pnpworker._log_handler = None


class InstallTest(unittest.TestCase):
    """pip installs the SDK offline with Debian's setuptools; python3 -m
    pnpworker then serves an adapter."""

    def test_pip_install_offline(self):
        have = subprocess.run([sys.executable, "-c", "import setuptools, wheel, pip"],
                              capture_output=True, timeout=60)
        if have.returncode != 0:
            if os.environ.get("CI"):
                self.fail("pip, setuptools or wheel missing (Debian: python3-pip): " + have.stderr.decode())
            self.skipTest("pip, setuptools or wheel missing (Debian: python3-pip)")
        here = os.path.dirname(os.path.abspath(__file__))
        with tempfile.TemporaryDirectory() as d:
            src = os.path.join(d, "src")
            os.mkdir(src)
            for name in ("pyproject.toml", "README.md", "pnpworker.py"):
                with open(os.path.join(here, name), "rb") as f, open(os.path.join(src, name), "wb") as g:
                    g.write(f.read())
            target = os.path.join(d, "site")
            p = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index",
                                "--no-build-isolation", "--target", target, src],
                               capture_output=True, timeout=300)
            self.assertEqual(p.returncode, 0, p.stderr.decode())
            self.assertTrue(os.path.exists(os.path.join(target, "pnpworker-" + pnpworker.__version__ + ".dist-info")))
            adapter_path = os.path.join(d, "m.py")
            with open(adapter_path, "w") as f:
                f.write("def run_one(a: int) -> int:\n    return a\n")
            env = dict(os.environ, PYTHONPATH=target)
            p = subprocess.run([sys.executable, "-m", "pnpworker", "--describe", adapter_path],
                               capture_output=True, timeout=60, env=env, cwd=d)
            self.assertEqual(p.returncode, 0, p.stderr.decode())
            hello = json.loads(p.stdout)
            self.assertEqual(hello["sdk"], "pnpworker-python/" + pnpworker.__version__)
            self.assertEqual([a["name"] for a in hello["algorithms"]], ["one"])


class ProcessTest(unittest.TestCase):
    """The SDK as the runner starts it: stdout carries protocol lines only."""

    def test_stray_output_goes_to_stderr(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "noisy.py")
            with open(path, "w") as f:
                f.write(textwrap.dedent('''
                    import os, sys
                    print("printed at import")
                    def setup():
                        print("printed in setup")
                    def run_noisy(text: str) -> dict:
                        print("printed in a request")
                        os.write(1, b"written to fd 1\\n")
                        return {"text": text}
                '''))
            req = json.dumps({"type": "request", "id": "9", "algorithm": "noisy", "input": {"text": "hi"}})
            p = subprocess.run([sys.executable, SDK, path], input=(req + "\n").encode(),
                               capture_output=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            lines = p.stdout.decode().splitlines()
            self.assertEqual([json.loads(l)["type"] for l in lines], ["hello", "result"])
            self.assertEqual(json.loads(lines[1])["output"], {"text": "hi"})
            err = p.stderr.decode()
            for s in ("printed at import", "printed in setup", "printed in a request", "written to fd 1"):
                self.assertIn(s, err)

    def test_describe(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.py")
            with open(path, "w") as f:
                f.write("VERSION = '3.0.0'\ndef run_one(a: int) -> int:\n    return a\n")
            p = subprocess.run([sys.executable, SDK, "--describe", path], capture_output=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            hello = json.loads(p.stdout)
            self.assertEqual(hello["algorithms"][0]["version"], "3.0.0")


if __name__ == "__main__":
    unittest.main()


PROGRESS = '''
import pnpworker

@pnpworker.algorithm(concurrency=4)
def run_steps(name: str) -> dict:
    barrier.wait(timeout=10)
    for i in range(1, 4):
        pnpworker.progress(i / 4, f"{name} step {i}")
    errors = []
    for bad in (float("nan"), -0.5, 1.5, True, "half"):
        try:
            pnpworker.progress(bad)
        except ValueError as e:
            errors.append(str(e))
    for bad in ("x" * 201, "a\\x1b[2Jb", "a\\nb", "a\\u202eb"):
        try:
            pnpworker.progress(0.5, bad)
        except ValueError as e:
            errors.append(str(e))
    return {"errors": len(errors)}
'''


class ProgressTest(unittest.TestCase):
    def test_progress_per_request_under_concurrency(self):
        m = module(PROGRESS, barrier=threading.Barrier(2))
        sent = serve(m, [
            {"type": "request", "id": "a", "algorithm": "steps", "input": {"name": "a"}},
            {"type": "request", "id": "b", "algorithm": "steps", "input": {"name": "b"}},
        ])
        for rid in ("a", "b"):
            reports = [s for s in sent if s["type"] == "progress" and s["id"] == rid]
            self.assertEqual([(r["fraction"], r["message"]) for r in reports],
                             [(0.25, f"{rid} step 1"), (0.5, f"{rid} step 2"), (0.75, f"{rid} step 3")])
            result = [s for s in sent if s["type"] == "result" and s["id"] == rid]
            self.assertEqual(result[0]["output"], {"errors": 9})

    def test_outside_a_request_is_a_no_op(self):
        self.assertIsNone(pnpworker.progress(0.5, "nobody listens"))
        with self.assertRaises(ValueError):
            pnpworker.progress(2)

    def test_message_refused_as_the_runner_refuses_it(self):
        # The runner (protocol.CheckProgressMessage) refuses every
        # Bidi_Control character, the marks too: refused here with a
        # ValueError rather than dropped on the runner's side.
        for ch in ("\u061c", "\u200e", "\u200f", "\u202a", "\u2066", "\u2069"):
            with self.assertRaises(ValueError, msg=repr(ch)):
                pnpworker.progress(0.5, "a" + ch + "b")
