"""The bundled backbone: corpus, tokenizer, training script and loader."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from dsacache.dsa.backbone import corpus  # noqa: E402
from dsacache.dsa.backbone.tokenizer import EOS, save_tokenizer, train_tokenizer  # noqa: E402
from dsacache.dsa.backbone.train import lr_factor, parse_args, train  # noqa: E402
from dsacache.dsa.models import SUPPORTED_MODEL_TYPES, load_backbone, tiny_path  # noqa: E402
from dsacache.errors import DsacacheError  # noqa: E402
from test_dsa_common import FAMILIES, tiny_model  # noqa: E402

PROSE = (
    "The quick brown fox jumps over the lazy dog while the cache keeps its tokens warm. "
    "Sparse attention reads only a few entries of the key value cache at every step.\n"
)


def _fake_roots(tmp_path):
    std = tmp_path / "stdlib"
    (std / "pkg").mkdir(parents=True)
    (std / "test").mkdir()
    (std / "site-packages").mkdir()
    for i in range(30):
        (std / "pkg" / f"mod{i:02d}.py").write_text(f"def f{i}(x):\n    return x + {i}\n" * 5)
    (std / "dup.py").write_text("def f0(x):\n    return x + 0\n" * 5)  # same text as mod00
    (std / "test" / "test_x.py").write_text("assert True\n")
    (std / "site-packages" / "other.py").write_text("x = 1\n")
    (std / "latin.py").write_bytes(b"# caf\xe9\n")  # not UTF-8: left out
    doc = tmp_path / "doc"
    (doc / "pkg").mkdir(parents=True)
    (doc / "pkg" / "README").write_text(PROSE * 3)
    (doc / "pkg" / "NEWS.gz").write_bytes(gzip.compress((PROSE * 4).encode()))
    (doc / "pkg" / "table.txt").write_text("1 2 3 4 5 6 7 8 9 0 = + - *\n" * 40)  # not prose
    (doc / "pkg" / "image.png").write_bytes(b"\x89PNG")
    lic = tmp_path / "licenses"
    lic.mkdir()
    (lic / "MIT").write_text(PROSE * 2)
    return std, doc, lic


def test_corpus_is_deterministic_and_filtered(tmp_path):
    std, doc, lic = _fake_roots(tmp_path)
    a = corpus.collect(std, doc, lic)
    b = corpus.collect(std, doc, lic)
    assert a == b
    names = [d.name for d in a]
    assert names == sorted(names)
    assert "doc/pkg/NEWS.gz" in names and "doc/pkg/README" in names and "licenses/MIT" in names
    # same text twice: the first name in sorted order is kept
    assert "stdlib/dup.py" in names and "stdlib/pkg/mod00.py" not in names
    for left_out in ("stdlib/test/test_x.py", "stdlib/latin.py", "doc/pkg/table.txt"):
        assert left_out not in names
    assert not any("site-packages" in n or n.endswith(".png") for n in names)
    assert all(d.heldout == corpus.heldout_by_name(d.name) for d in a)
    assert len({d.text for d in a}) == len(a)


def test_heldout_split_fraction():
    held = sum(corpus.heldout_by_name(f"stdlib/m{i}.py") for i in range(20000))
    assert 0.015 < held / 20000 < 0.025


def test_cut_keeps_line_boundary():
    text = "abc\n" * 100
    cut = corpus._cut(text, 50)
    assert cut.endswith("\n") and len(cut.encode()) <= 50 and text.startswith(cut)


def test_tokenizer_round_trip_and_transformers_load(tmp_path):
    from transformers import AutoTokenizer

    tok = train_tokenizer([PROSE * 5, "def f(x):\n    return x\n" * 20], vocab_size=320)
    save_tokenizer(tok, tmp_path)
    hf = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    s = "Unseen text: ünïcödé 🙂\n\tdef g(y):\n        return y  # done"
    assert hf.decode(hf(s).input_ids) == s
    assert hf.eos_token == EOS and hf.convert_tokens_to_ids(EOS) == 0
    assert len(hf(PROSE).input_ids) < len(PROSE.encode()) / 2  # merges were learned


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A corpus of fake documents and a 3-step CPU training on it."""
    root = tmp_path_factory.mktemp("bb")
    docs = [corpus.Document(f"doc/{i}", PROSE * (2 + i % 3), heldout=i % 5 == 0) for i in range(40)]
    summary = corpus.build(root / "data", vocab_size=300, docs=docs)
    args = parse_args(
        f"--data {root / 'data'} --out {root / 'ckpt'} --device cpu --steps 3 --batch 2 --seq 32 "
        "--hidden 64 --layers 2 --head-dim 32 --kv-heads 1 --intermediate 128 --lr 1e-2 "
        "--warmup 1 --log-every 1 --eval-windows 2".split()
    )
    return root, summary, train(args)


def test_corpus_build_writes_ids(tiny_run):
    root, summary, _ = tiny_run
    train_ids = np.load(root / "data" / "train.npy")
    assert train_ids.dtype == np.uint16 and train_ids.size == summary["train_tokens"]
    assert (train_ids == summary["eos_id"]).sum() == summary["train_documents"]
    assert train_ids.max() < summary["vocab_size"]
    assert (root / "data" / "heldout.txt").stat().st_size > 0


def test_training_changes_loss_and_saves_loadable_checkpoint(tiny_run):
    root, _, log = tiny_run
    assert log["steps_run"] == 3 and log["stop_reason"] == "steps"
    losses = [r["loss"] for r in log["history"]]
    assert len(losses) == 3 and losses[-1] < losses[0]
    saved = json.loads((root / "ckpt" / "training_log.json").read_text())
    assert saved["steps_run"] == 3 and saved["heldout"][0]["context"] == 1024
    model, tok = load_backbone(str(root / "ckpt"))
    assert not model.training and model.config.model_type == "llama"
    assert model.config.tie_word_embeddings and model.config.num_key_value_heads == 1
    out = model.generate(tok("The quick", return_tensors="pt").input_ids, max_new_tokens=4)
    assert out.shape[1] > 2


def test_wall_clock_guard_stops_and_saves(tiny_run, tmp_path):
    root, _, _ = tiny_run
    args = parse_args(
        f"--data {root / 'data'} --out {tmp_path / 'c'} --device cpu --steps 1000 --batch 1 "
        "--seq 16 --hidden 64 --layers 1 --head-dim 32 --kv-heads 1 --intermediate 64 "
        "--max-minutes 0.00001 --eval-windows 1".split()
    )
    log = train(args)
    assert log["stop_reason"] == "wall-clock" and log["steps_run"] < 1000
    # What it saved is the stopped run: loadable, with this run's shape and step count.
    saved = json.loads((tmp_path / "c" / "training_log.json").read_text())
    assert saved["stop_reason"] == "wall-clock" and saved["steps_run"] == log["steps_run"]
    model, _ = load_backbone(str(tmp_path / "c"))
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (1, 64)


def test_lr_schedule():
    assert lr_factor(0.0, 0, 10) == pytest.approx(0.1)
    assert lr_factor(0.0, 10, 10) == pytest.approx(1.0)
    assert lr_factor(1.0, 500, 10) == pytest.approx(0.1)
    assert lr_factor(0.5, 500, 10) == pytest.approx(0.55)


def test_loader_errors(tmp_path):
    with pytest.raises(DsacacheError, match="no such directory"):
        load_backbone(str(tmp_path / "missing"))
    with pytest.raises(DsacacheError, match="not a Hugging Face checkpoint"):
        load_backbone(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    with pytest.raises(DsacacheError, match="unsupported architecture 'mamba'"):
        load_backbone(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(DsacacheError, match="unreadable config.json"):
        load_backbone(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(DsacacheError, match="cannot load checkpoint"):
        load_backbone(str(tmp_path))  # config but no tokenizer/weights


@pytest.mark.parametrize("family", [*FAMILIES, "bloom"])
def test_loader_loads_every_supported_family(tmp_path, family):
    """A saved checkpoint of each family round-trips through load_backbone (same logits); a
    family transformers knows but DSA does not serve (bloom) is refused."""
    import shutil

    model = tiny_model(family)
    model.save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_path() / name, tmp_path / name)
    if family not in SUPPORTED_MODEL_TYPES:
        with pytest.raises(DsacacheError, match=f"unsupported architecture '{family}'"):
            load_backbone(str(tmp_path))
        return
    loaded, tok = load_backbone(str(tmp_path))
    assert loaded.config.model_type == family and not loaded.training
    ids = torch.tensor([[1, 5, 9, 2, 7]])
    with torch.inference_mode():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert tok.decode(tok("def f(x):").input_ids) == "def f(x):"


def test_tiny_asset_loads():
    path = tiny_path()
    total = sum(p.stat().st_size for p in path.iterdir())
    assert total <= 50 * 2**20
    assert (path / "heldout.txt").stat().st_size <= 200 * 1024
    model, tok = load_backbone("tiny")
    n = sum(p.numel() for p in model.parameters())
    assert 5e6 <= n <= 30e6
    assert model.config.max_position_embeddings >= 2048 and model.config.model_type == "llama"
    text = (path / "heldout.txt").read_text()[:500]
    assert tok.decode(tok(text).input_ids) == text


def test_tiny_weights_are_trained():
    """The shipped weights and indexer really model held-out text: computed here, on two
    256-token windows of the packaged held-out text, against untrained controls of the same
    shapes (nothing is read from the shipped training logs)."""
    from transformers import AutoModelForCausalLM

    from dsacache.dsa.distill import encode_text, evaluate, heldout_windows
    from dsacache.dsa.indexer import LightningIndexer
    from dsacache.dsa.models import load_indexer

    path = tiny_path()
    model, tok = load_backbone("tiny")
    windows = heldout_windows(encode_text(tok, (path / "heldout.txt").read_text()[:6000]), 256, 2)
    assert windows.shape == (2, 256)
    torch.manual_seed(0)
    untrained = AutoModelForCausalLM.from_config(model.config).eval()
    with torch.inference_mode():
        loss = float(model(input_ids=windows, labels=windows).loss)
        control = float(untrained(input_ids=windows, labels=windows).loss)
    # Random weights predict ~uniformly: ln(vocab) = ln(8192) = 9.0 nats. Trained: ~2.1.
    assert control > 0.9 * np.log(model.config.vocab_size)
    assert loss < 3.5 and loss < control - 4.0
    # The distilled indexer's top-32 recall of dense attention, against an untrained indexer of
    # the same shape (measured: 0.77 vs 0.29).
    indexer, source = load_indexer(None, path, model)
    assert source is not None
    fresh = LightningIndexer(indexer.config, indexer.hidden_size, indexer.num_layers, seed=0)
    cpu = torch.device("cpu")
    trained_recall = evaluate(model, indexer, windows, 32, 2, cpu).overall
    fresh_recall = evaluate(model, fresh, windows, 32, 2, cpu).overall
    assert trained_recall > 0.6 and trained_recall > fresh_recall + 0.3
