"""Test algorithms for the worker package, served by sdk/python/pnpworker.py."""

import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Literal, Optional

import pnpworker

VERSION = "2.1.0"


def run_greet(name: str, times: int = 1, style: Literal["plain", "loud"] = "plain") -> dict:
    """Greets someone, maybe loudly."""
    print("a stray print to stdout must not break the protocol")
    print(f"greeting {name}", file=sys.stderr)
    text = " ".join([f"hello {name}"] * times)
    return {"text": text.upper() if style == "loud" else text}


def run_picky(word: str) -> dict:
    """Rejects words it does not like; fails on 'explode'."""
    if word == "explode":
        raise RuntimeError("the picky algorithm exploded")
    if word != "please":
        raise pnpworker.Reject(f"{word!r} is not the magic word")
    return {"ok": True}


def run_log(message: str) -> dict:
    """Writes message to the runner's log."""
    pnpworker.log(message, "warn")
    return {}


def run_pid() -> int:
    """The worker process's pid."""
    return os.getpid()


@pnpworker.algorithm(concurrency=8)
def run_sleep(ms: int, ignore_cancel: bool = False) -> dict:
    """Sleeps ms milliseconds; stops early when cancelled unless told not to."""
    end = time.monotonic() + ms / 1000
    while time.monotonic() < end:
        if pnpworker.cancelled() and not ignore_cancel:
            return {"slept": "cancelled"}
        time.sleep(0.01)
    return {"slept": ms}


def run_echo(text: str) -> dict:
    """Returns its text: big messages go both ways."""
    return {"text": text, "length": len(text)}


@dataclass
class Item:
    n: int
    label: Optional[str] = None


@pnpworker.batch(max_size=16, max_wait_ms=20)
def run_double(items: list[Item]) -> list[dict]:
    """Doubles n, in batches; rejects negative numbers per item."""
    time.sleep(0.01)
    return [pnpworker.Reject("negative") if it.n < 0 else {"doubled": 2 * it.n, "batch": len(items)} for it in items]


def run_kind(value: Any = None) -> dict:
    """The Python type of any JSON value."""
    return {"kind": type(value).__name__, "pid": os.getpid()}
