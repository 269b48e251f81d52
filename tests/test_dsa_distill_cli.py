"""`dsacache distill` end to end on a tiny local HF checkpoint, resume, and one-line errors."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402

from dsacache.cli.app import run  # noqa: E402
from dsacache.dsa import distill as D  # noqa: E402
from dsacache.dsa.indexer import LightningIndexer  # noqa: E402
from dsacache.dsa.models import load_backbone  # noqa: E402
from test_dsa_common import one_thread, tiny_gqa_llama  # noqa: E402, F401 - autouse fixture

PROSE = (
    "The cache keeps the tokens that the indexer selected at the previous step. "
    "Attention reads only the top-k entries, so the working set moves every step. "
    "def select(scores, k):\n    return sorted(range(len(scores)), key=scores.__getitem__)[-k:]\n"
)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A random 2-layer GQA Llama and a byte-level BPE tokenizer saved as a local checkpoint."""
    from dsacache.dsa.backbone.tokenizer import save_tokenizer, train_tokenizer

    d = tmp_path_factory.mktemp("hf")
    tok = train_tokenizer([PROSE * 4], vocab_size=300)
    save_tokenizer(tok, d)
    tiny_gqa_llama(tok.get_vocab_size()).save_pretrained(d)
    return d


@pytest.fixture
def texts(tmp_path):
    train, held = tmp_path / "train.txt", tmp_path / "held.txt"
    train.write_text(PROSE * 20)
    held.write_text(PROSE[::-1] * 5)
    return train, held


def _args(hf_dir, texts, out, *extra: str) -> list[str]:
    train, held = texts
    return [
        "distill", "--model", str(hf_dir), "--text", str(train), "--heldout", str(held),
        "--seq", "24", "--batch", "2", "--top-k", "4", "--lr", "1e-2", "--device", "cpu",
        "--index-heads", "2", "--index-dim", "16", "--eval-windows", "2",
        "--out", str(out), *extra,
    ]  # fmt: skip


def test_distill_end_to_end_and_resume(hf_dir, texts, tmp_path, capsys) -> None:
    out = tmp_path / "ix.safetensors"
    assert run(_args(hf_dir, texts, out, "--steps", "4", "--checkpoint-every", "2")) == 0
    printed = capsys.readouterr().out
    assert "recall before" in printed and "all" in printed
    report = json.loads((tmp_path / "ix.recall.json").read_text())
    assert report["steps"] == 4 and report["top_k"] == 4
    for side in ("before", "after"):
        assert len(report[side]["per_layer"]) == 2
        assert 0.0 <= report[side]["overall"] <= 1.0
    ix = LightningIndexer.load(out)
    assert (ix.num_layers, ix.hidden_size, ix.config.heads) == (2, 64, 2)
    # The reported recall is the saved indexer's, recomputed here on the same held-out windows.
    model, tok = load_backbone(str(hf_dir))
    windows = D.heldout_windows(D.encode_text(tok, texts[1].read_text()), 24, 2)
    again = D.evaluate(model, ix, windows, 4, 2, torch.device("cpu"))
    assert again.overall == pytest.approx(report["after"]["overall"], abs=1e-12)
    assert again.per_layer == pytest.approx(report["after"]["per_layer"], abs=1e-12)
    assert (tmp_path / "ix.train.safetensors").is_file()
    assert not list(tmp_path.glob("*.tmp"))
    # Resume: settings come from the checkpoint (no --seq/--batch/... given), train to step 6.
    train, held = texts
    out2 = tmp_path / "ix2.safetensors"
    rc = run(
        [
            "distill", "--model", str(hf_dir), "--text", str(train), "--heldout", str(held),
            "--top-k", "4", "--device", "cpu", "--eval-windows", "2",
            "--steps", "6", "--resume", str(out), "--out", str(out2),
        ]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    report2 = json.loads((tmp_path / "ix2.recall.json").read_text())
    assert report2["steps"] == 6 and report2["resumed_from_step"] == 4
    assert report2["train"] == report["train"]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--steps", "0"], "--steps"),
        (["--top-k", "24"], "--top-k"),
        (["--seq", "1"], "--seq"),
        (["--lr", "-1"], "--lr"),
        (["--device", "tpu"], "--device"),
        (["--resume", "nope.safetensors"], "--resume"),
        (["--checkpoint-every", "-1"], "--checkpoint-every"),
    ],
)
def test_bad_options_are_one_line_exit_2(hf_dir, texts, tmp_path, capsys, extra, needle) -> None:
    out = tmp_path / "x.safetensors"
    assert run(_args(hf_dir, texts, out, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dsacache: error:") and "\n" not in err and needle in err
    assert not out.exists()  # nothing written


def test_bad_files_are_one_line_exit_2(hf_dir, texts, tmp_path, capsys) -> None:
    train, held = texts
    cases = [
        (["distill", "--model", str(hf_dir), "--text", str(tmp_path / "no.txt"),
          "--heldout", str(held)], "no.txt"),
        (["distill", "--model", str(tmp_path / "nomodel"), "--text", str(train),
          "--heldout", str(held)], "nomodel"),
        (["distill", "--model", str(hf_dir), "--heldout", str(held)], "--text"),
        (["distill", "--model", str(hf_dir), "--text", str(train), "--heldout", str(held),
          "--out", str(tmp_path / "x.pt")], "--out"),
    ]  # fmt: skip
    for argv, needle in cases:
        assert run(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("dsacache: error:") and "\n" not in err and needle in err, err


def test_help_mentions_kl_and_recall(capsys) -> None:
    assert run(["distill", "--help"]) == 0
    text = capsys.readouterr().out
    assert "KL" in text and "recall" in text
