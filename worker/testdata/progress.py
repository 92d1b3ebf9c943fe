"""A test algorithm that reports progress, served by sdk/python/pnpworker.py."""

import time

import pnpworker


@pnpworker.algorithm(concurrency=2)
def run_steps(ms: int) -> dict:
    """Reports broken progress lines (which the runner drops), then half
    way, then works ms milliseconds."""
    srv, rid = pnpworker._server, pnpworker._local.id
    srv.send({"type": "progress", "id": rid, "fraction": "half"})
    srv.send({"type": "progress", "id": rid, "fraction": 7})
    srv.send({"type": "progress", "id": rid})
    with srv.lock:  # a line cut short: not JSON
        srv.out.write(('{"type":"progress","id":"%s","fraction":0.' % rid).encode() + b"\n")
        srv.out.flush()
    pnpworker.progress(0.5, "half way")
    end = time.monotonic() + ms / 1000
    while time.monotonic() < end and not pnpworker.cancelled():
        time.sleep(0.01)
    return {"done": True}
