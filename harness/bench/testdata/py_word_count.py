"""The benchmark's trivial algorithm in Python, in the runner_adapter
convention; served through the worker protocol by sdk/python/pnpworker.py
and, by fastapi_runner.py, the original pattern's way."""


def run_py_word_count(text: str) -> dict:
    """Counts the words of a text."""
    return {"words": len(text.split())}
