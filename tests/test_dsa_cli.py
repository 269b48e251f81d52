"""`dsacache record` end to end on a tiny random checkpoint saved to a temp HF directory."""

from __future__ import annotations

import json

import pytest

from dsacache.cli.app import run
from dsacache.trace import Trace
from test_dsa_common import tiny_indexer, tiny_model

VOCAB = 320  # >= the byte-level BPE's 256 bytes + 1 special token


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):  # noqa: ANN001, ANN201
    from dsacache.dsa.backbone.tokenizer import save_tokenizer, train_tokenizer

    path = tmp_path_factory.mktemp("hf")
    tok = train_tokenizer(["hello world, a tiny corpus for a tiny test"] * 4, vocab_size=300)
    save_tokenizer(tok, path)
    model = tiny_model("llama", vocab_size=VOCAB)
    model.save_pretrained(str(path))
    tiny_indexer(model).save(path / "distilled.safetensors")
    (path / "heldout.txt").write_text("hello world, some held-out text " * 12)
    return path


def _record(hf_dir, out, *extra: str) -> int:  # noqa: ANN001
    args = ["record", "--model", str(hf_dir), "--prompt", "hello world", "--prompt", "a tiny"]
    return run([*args, "--max-new-tokens", "5", "--top-k", "4", "--out", str(out), *extra])


def test_record_then_analyze(hf_dir, tmp_path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "t"
    assert _record(hf_dir, out, "--near-miss", "2") == 0
    err = capsys.readouterr().err
    assert "untrained indexer" in err  # no indexer.safetensors in the dir, no --indexer
    trace = Trace.load(out)
    assert len(trace.requests) == 2 and trace.steps == 5
    assert trace.geometry.top_k == 4 and trace.geometry.layers == 2
    assert trace.requests[0].near_miss.shape == (5, 2, 2)
    assert trace.meta["model"] == str(hf_dir.resolve())
    assert trace.meta["indexer_trained"] is False
    assert run(["analyze", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["requests"] == 2 and report["top_k"] == 4


def test_record_with_indexer_and_eval(hf_dir, tmp_path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "t"
    ix = str(hf_dir / "distilled.safetensors")
    assert _record(hf_dir, out, "--indexer", ix, "--eval", "--eval-tokens", "64") == 0
    captured = capsys.readouterr()
    assert "untrained" not in captured.err
    assert "perplexity delta" in captured.out
    ev = Trace.load(out).meta["eval"]
    assert 0 <= ev["recall"] <= 1 and ev["tokens"] == 64 and ev["ppl_dense"] > 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "/no/such/model"], "no such directory"),
        (["--top-k", "0"], "--top-k"),
        (["--indexer", "/no/such.safetensors"], "not found"),
    ],
)
def test_bad_input_one_line_exit_2(hf_dir, tmp_path, capsys, args, needle) -> None:  # noqa: ANN001
    base = ["record", "--model", str(hf_dir), "-p", "hi", "-n", "2", "--out", str(tmp_path / "x")]
    assert run([*base, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dsacache: error:") and needle in err and "\n" not in err
    assert not (tmp_path / "x").exists()
