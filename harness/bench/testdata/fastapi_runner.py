"""The original pattern's runner architecture for the benchmark: FastAPI +
pydantic + uvicorn serving the same runner_adapter function over HTTP.

    python3 -m uvicorn fastapi_runner:app --port PORT
"""

from fastapi import FastAPI
from pydantic import BaseModel

from py_word_count import run_py_word_count


class Input(BaseModel):
    text: str


class Output(BaseModel):
    words: int


app = FastAPI()


@app.post("/run/py_word_count", response_model=Output)
def run(inp: Input) -> Output:
    return Output(**run_py_word_count(inp.text))
