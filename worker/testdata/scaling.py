"""A slow algorithm for the scaling tests: one request at a time per
process, and every execution written down (file SCALING_LOG). It is named
slow, or SCALING_NAME when set (a runner user may serve only its own
algorithms' names)."""

import os
import time

import pnpworker


def _note(event: str, token: str) -> None:
    # One short line per write, opened in append mode: lines from several
    # processes do not interleave.
    with open(os.environ["SCALING_LOG"], "a") as f:
        f.write(f"{event} {token} {os.getpid()}\n")


@pnpworker.algorithm(name=os.environ.get("SCALING_NAME", "slow"), concurrency=1, timeout=60)
def run_slow(token: str, ms: int = 300) -> dict:
    """Sleeps ms milliseconds; notes its start and end."""
    _note("start", token)
    time.sleep(ms / 1000)
    _note("end", token)
    return {"token": token, "pid": os.getpid()}
