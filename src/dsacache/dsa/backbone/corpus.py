"""The bundled backbone's training corpus: offline, real text, built deterministically.

Two sources on any Debian/Ubuntu machine with CPython: the Python standard library's own source
(code) and English prose shipped by Debian packages (licences, READMEs, NEWS, copyright files,
plain-text and Markdown docs). Files are listed in sorted order, decoded as strict UTF-8,
deduplicated by content hash, and split into train / held-out by a hash of their *name* (not of
their content), so the split is stable when a file's content changes.

`python -m dsacache.dsa.backbone.corpus --out DIR` writes train.npy / heldout.npy (uint16 token
ids, documents separated by <|endoftext|>), the tokenizer (tokenizer.json + config), a
heldout.txt sample and manifest.json (every file, its hash, bytes and split). docs/backbone.md
describes exactly what goes in.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HELDOUT_PERCENT = 2  # files whose name hash falls below this percentage go to held-out
MAX_DOC_BYTES = 256 * 1024  # longer files are cut at a line boundary (a few huge ones dominate)
MIN_DOC_BYTES = 200
MIN_ALPHA_FRACTION = 0.6  # prose filter: letters among non-whitespace characters
HELDOUT_SAMPLE_BYTES = 190 * 1024  # heldout.txt shipped with the model (<= 200 KB)

# Prose under /usr/share/doc: these names, optionally gzip-compressed.
DOC_PREFIXES = ("readme", "news", "copyright")
DOC_SUFFIXES = (".txt", ".md", ".rst")
# Long machine-made lists (commit logs) rather than prose.
DOC_SKIP_PARTS = ("changelogs",)
# Stdlib directories of tests and test data: repetitive, sometimes deliberately malformed.
STDLIB_SKIP_PARTS = ("site-packages", "test", "tests", "idle_test", "__pycache__")


@dataclass(frozen=True)
class Document:
    """One corpus file: a stable name (source/relative path), its text and its split."""

    name: str
    text: str
    heldout: bool


def heldout_by_name(name: str, percent: int = HELDOUT_PERCENT) -> bool:
    """The split: sha256 of the stable name, first 8 bytes mod 100 below `percent`."""
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    return h % 100 < percent


def _read_text(path: Path) -> str | None:
    """The file as strict UTF-8 (gunzipped when .gz), or None when it is not text."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        if b"\x00" in raw:
            return None
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
        return None


def _cut(text: str, limit: int = MAX_DOC_BYTES) -> str:
    """The text cut to at most `limit` UTF-8 bytes, at the last newline before the limit."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    head = data[:limit].decode("utf-8", errors="ignore")
    nl = head.rfind("\n")
    return head[: nl + 1] if nl > 0 else head


def looks_like_prose(text: str) -> bool:
    """Long enough, and mostly letters among its non-whitespace characters."""
    if len(text.encode("utf-8")) < MIN_DOC_BYTES:
        return False
    chars = [c for c in text[:20000] if not c.isspace()]
    if not chars:
        return False
    return sum(c.isalpha() for c in chars) / len(chars) >= MIN_ALPHA_FRACTION


def _is_doc_name(path: Path) -> bool:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.startswith(DOC_PREFIXES) or name.endswith(DOC_SUFFIXES)


def stdlib_files(root: Path) -> list[tuple[str, Path]]:
    """(stable name, path) of the stdlib's *.py files, sorted, tests and site-packages left out."""
    out = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root)
        if any(part in STDLIB_SKIP_PARTS for part in rel.parts[:-1]) or not p.is_file():
            continue
        out.append((f"stdlib/{rel.as_posix()}", p))
    return out


def prose_files(doc_root: Path, licenses_root: Path) -> list[tuple[str, Path]]:
    """(stable name, path) of prose files from Debian docs and common-licenses, sorted."""
    out = []
    if licenses_root.is_dir():
        for p in sorted(licenses_root.rglob("*")):
            if p.is_file() and not p.is_symlink():
                out.append((f"licenses/{p.relative_to(licenses_root).as_posix()}", p))
    if doc_root.is_dir():
        for p in sorted(doc_root.rglob("*")):
            rel = p.relative_to(doc_root)
            if any(part in DOC_SKIP_PARTS for part in rel.parts):
                continue
            if p.is_file() and not p.is_symlink() and _is_doc_name(p):
                out.append((f"doc/{rel.as_posix()}", p))
    return out


def collect(
    stdlib_root: Path | None = None,
    doc_root: Path = Path("/usr/share/doc"),
    licenses_root: Path = Path("/usr/share/common-licenses"),
) -> list[Document]:
    """Every corpus document, sorted by name, deduplicated by content (first name kept)."""
    if stdlib_root is None:
        stdlib_root = Path(sysconfig.get_paths()["stdlib"])
    entries = [(n, p, False) for n, p in stdlib_files(stdlib_root)]
    entries += [(n, p, True) for n, p in prose_files(doc_root, licenses_root)]
    entries.sort(key=lambda e: e[0])
    seen: set[bytes] = set()
    docs = []
    for name, path, prose in entries:
        text = _read_text(path)
        if text is None or (prose and not looks_like_prose(text)) or not text.strip():
            continue
        text = _cut(text)
        digest = hashlib.sha256(text.encode("utf-8")).digest()
        if digest in seen:
            continue
        seen.add(digest)
        docs.append(Document(name, text, heldout_by_name(name)))
    return docs


def encode_stream(tokenizer: object, texts: list[str], eos_id: int) -> np.ndarray:
    """Documents' token ids concatenated, each followed by <|endoftext|>, as uint16."""
    parts = []
    for enc in tokenizer.encode_batch(texts):  # type: ignore[attr-defined]
        parts.append(np.asarray(enc.ids, dtype=np.uint16))
        parts.append(np.asarray([eos_id], dtype=np.uint16))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def heldout_sample(docs: list[Document], limit: int = HELDOUT_SAMPLE_BYTES) -> str:
    """Whole held-out documents, prose and code alternating, until `limit` UTF-8 bytes."""
    held = [d for d in docs if d.heldout]
    prose = [d for d in held if not d.name.startswith("stdlib/")]
    code = [d for d in held if d.name.startswith("stdlib/")]
    order = [d for pair in zip(prose, code, strict=False) for d in pair]
    order += prose[len(code) :] + code[len(prose) :]
    out, size = [], 0
    for d in order:
        b = len(d.text.encode("utf-8")) + 1
        if size + b > limit:
            continue
        out.append(d.text)
        size += b
    return "\n".join(out)


def build(out: Path, vocab_size: int = 8192, docs: list[Document] | None = None) -> dict:
    """Build the corpus, train the tokenizer on its train split, write everything to `out`."""
    from dsacache.dsa.backbone.tokenizer import EOS, save_tokenizer, train_tokenizer

    t0 = time.perf_counter()
    docs = collect() if docs is None else docs
    train = [d for d in docs if not d.heldout]
    held = [d for d in docs if d.heldout]
    print(f"corpus: {len(docs)} documents ({len(train)} train, {len(held)} held-out)", flush=True)
    tok = train_tokenizer((d.text for d in train), vocab_size)
    eos_id = tok.token_to_id(EOS)
    out.mkdir(parents=True, exist_ok=True)
    save_tokenizer(tok, out)
    print(f"tokenizer: vocab {tok.get_vocab_size()} ({time.perf_counter() - t0:.0f} s)", flush=True)
    train_ids = encode_stream(tok, [d.text for d in train], eos_id)
    held_ids = encode_stream(tok, [d.text for d in held], eos_id)
    np.save(out / "train.npy", train_ids)
    np.save(out / "heldout.npy", held_ids)
    (out / "heldout.txt").write_text(heldout_sample(docs), encoding="utf-8")
    files = [
        {
            "name": d.name,
            "sha256": hashlib.sha256(d.text.encode("utf-8")).hexdigest(),
            "bytes": len(d.text.encode("utf-8")),
            "split": "heldout" if d.heldout else "train",
        }
        for d in docs
    ]
    summary = {
        "documents": len(docs),
        "train_documents": len(train),
        "heldout_documents": len(held),
        "train_bytes": sum(f["bytes"] for f in files if f["split"] == "train"),
        "heldout_bytes": sum(f["bytes"] for f in files if f["split"] == "heldout"),
        "train_tokens": int(train_ids.size),
        "heldout_tokens": int(held_ids.size),
        "vocab_size": tok.get_vocab_size(),
        "eos_id": eos_id,
        "python": sys.version.split()[0],
    }
    (out / "manifest.json").write_text(json.dumps({**summary, "files": files}, indent=1))
    print(json.dumps(summary), flush=True)
    print(f"done in {time.perf_counter() - t0:.0f} s -> {out}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m dsacache.dsa.backbone.corpus`."""
    ap = argparse.ArgumentParser(description="Build the backbone corpus (token ids + tokenizer).")
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--vocab", type=int, default=8192, help="BPE vocabulary size")
    args = ap.parse_args(argv)
    build(args.out, args.vocab)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
