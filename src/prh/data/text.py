"""Text corpora: WordNet glosses (Debian ``wordnet-base``) and the Python docs in ``pydoc_data.topics``.

WordNet: one document per synset of ``data.noun/verb/adj/adv`` (license header lines, which start with two
spaces, skipped); the document is the gloss after ``|`` with whitespace collapsed (definition plus quoted
examples). Split is fixed, independent of any seed: a synset is ``heldout`` when sha256("<file>:<offset>")
(e.g. "noun:00001740") mod 10 is 0 (about 10%), else ``train``.
Label ``pos``: 0 noun, 1 verb, 2 adjective (incl. satellites), 3 adverb.

pydoc: the stdlib's help topics, split at blank lines into paragraphs and packed into documents of at most
``doc_chars`` characters (a longer paragraph is cut at whitespace); a held-out corpus no prh model trains on.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prh.data import Dataset, check_keys, field_name, make_dataset, rng_for, spec_choice, spec_int
from prh.errors import PrhError

WORDNET_PATH = "/usr/share/wordnet"
WORDNET_PACKAGE = "wordnet-base"
WORDNET_FILES = ("noun", "verb", "adj", "adv")
POS_NAMES = ["noun", "verb", "adjective", "adverb"]
HELDOUT_MODULUS = 10  # 1 in 10 synsets is held out
WORDNET_KEYS = frozenset({"path", "split", "n_docs", "max_chars", "seed"})
PYDOC_KEYS = frozenset({"n_docs", "doc_chars", "seed"})


@dataclass(frozen=True)
class Synset:
    """One WordNet synset line: its file, offset, first lemma and gloss."""

    pos: int  # index into WORDNET_FILES / POS_NAMES
    offset: str  # 8-digit byte offset, unique within its file
    lemma: str  # first word, underscores as spaces, adjective markers like "(a)" removed
    gloss: str  # text after "|", whitespace collapsed

    @property
    def heldout(self) -> bool:
        """Fixed 10% held-out membership from the hash of (file, offset)."""
        h = hashlib.sha256(f"{WORDNET_FILES[self.pos]}:{self.offset}".encode()).hexdigest()
        return int(h[:8], 16) % HELDOUT_MODULUS == 0

    @property
    def definition(self) -> str:
        """The gloss without its quoted examples."""
        return re.split(r'"', self.gloss, maxsplit=1)[0].strip().rstrip(";").strip()


def parse_synset_line(line: str, pos: int) -> Synset | None:
    """A data.* line -> Synset, or None for license header lines and lines without a gloss."""
    if line.startswith("  ") or "|" not in line:
        return None
    head, gloss = line.split("|", 1)
    fields = head.split()
    lemma = re.sub(r"\([a-z]+\)$", "", fields[4]).replace("_", " ")
    return Synset(pos=pos, offset=fields[0], lemma=lemma, gloss=" ".join(gloss.split()))


def read_wordnet(path: str = WORDNET_PATH, field: str = "wordnet path") -> tuple[Synset, ...]:
    """All synsets of the four data files, in file order (noun, verb, adj, adv); cached per path."""
    for kind in WORDNET_FILES:
        file = Path(path) / f"data.{kind}"
        if not file.is_file():
            raise PrhError(f"{field}: {file} not found (install the Debian package {WORDNET_PACKAGE})")
    stamps = tuple((st.st_size, st.st_mtime_ns) for st in (Path(path, f"data.{k}").stat() for k in WORDNET_FILES))
    return parse_wordnet(str(Path(path).resolve()), stamps)


@functools.lru_cache(maxsize=2)
def parse_wordnet(path: str, stamps: tuple = ()) -> tuple[Synset, ...]:
    """Parse the four data files of a WordNet folder (stamps: file sizes and mtimes, a cache key only)."""
    synsets: list[Synset] = []
    for pos, kind in enumerate(WORDNET_FILES):
        with open(Path(path) / f"data.{kind}", encoding="utf-8", errors="replace") as f:
            synsets.extend(s for s in (parse_synset_line(line, pos) for line in f) if s is not None)
    return tuple(synsets)


def wordnet_split(split: str, path: str = WORDNET_PATH, field: str = "wordnet path") -> list[Synset]:
    """Synsets of the fixed split: 'train', 'heldout' or 'all'."""
    synsets = read_wordnet(path, field)
    if split == "all":
        return list(synsets)
    return [s for s in synsets if s.heldout == (split == "heldout")]


def wordnet_glosses(split: str = "all", path: str = WORDNET_PATH) -> list[tuple[str, str]]:
    """(lemma, definition without examples) pairs for every synset of the split, in file order."""
    return [(s.lemma, s.definition) for s in wordnet_split(split, path) if s.definition]


def pick_docs(lengths: np.ndarray, n_docs: int | None, max_chars: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset: n_docs documents, or as many as fit in max_chars."""
    if n_docs is None and max_chars is None:
        return np.arange(len(lengths))
    perm = rng_for(seed, "documents").permutation(len(lengths))
    if n_docs is not None:
        perm = perm[:n_docs]
    if max_chars is not None:
        perm = perm[np.cumsum(lengths[perm] + 1) - 1 <= max_chars]  # +1: the newline joining documents
    return np.sort(perm)


def load_wordnet(name: str, spec: dict) -> Dataset:
    """WordNet glosses of a fixed split as a text Dataset (texts only, label ``pos``)."""
    check_keys(name, spec, WORDNET_KEYS)
    path = str(spec.get("path", WORDNET_PATH))
    split = spec_choice(name, spec, "split", "train", ("train", "heldout", "all"))
    n_docs = spec_int(name, spec, "n_docs", None, lo=1)
    max_chars = spec_int(name, spec, "max_chars", None, lo=1)
    seed = spec_int(name, spec, "seed", 0)
    synsets = wordnet_split(split, path, field_name(name, "path"))
    keep = pick_docs(np.array([len(s.gloss) for s in synsets]), n_docs, max_chars, seed)  # type: ignore[arg-type]
    resolved = {
        "source": "wordnet",
        "path": path,
        "split": split,
        "n_docs": n_docs,
        "max_chars": max_chars,
        "seed": seed,
    }
    return make_dataset(
        name,
        texts=[synsets[i].gloss for i in keep],
        labels={"pos": np.array([synsets[i].pos for i in keep], dtype=np.int64)},
        meta={
            "source": "wordnet",
            "spec": resolved,
            "label_names": {"pos": POS_NAMES},
            "offsets": [f"{WORDNET_FILES[synsets[i].pos]}:{synsets[i].offset}" for i in keep],
        },
    )


def chunk_paragraph(paragraph: str, limit: int) -> list[str]:
    """Cut a paragraph at whitespace into pieces of at most limit characters (a longer word stands alone)."""
    pieces, current = [], ""
    for word in paragraph.split(" "):
        if current and len(current) + 1 + len(word) > limit:
            pieces.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    return pieces + ([current] if current else [])


def pydoc_documents(doc_chars: int) -> list[str]:
    """The stdlib help topics (sorted by name) packed into documents of <= doc_chars characters."""
    from pydoc_data.topics import topics

    docs: list[str] = []
    for key in sorted(topics):
        current = ""
        for para in (p.strip() for p in re.split(r"\n\s*\n", topics[key])):
            for piece in chunk_paragraph(para, doc_chars) if para else []:
                if current and len(current) + 2 + len(piece) > doc_chars:
                    docs.append(current)
                    current = piece
                else:
                    current = f"{current}\n\n{piece}" if current else piece
        if current:
            docs.append(current)
    return docs


def load_pydoc(name: str, spec: dict) -> Dataset:
    """Python help topics as a held-out text Dataset of documents of at most doc_chars characters."""
    import sys

    check_keys(name, spec, PYDOC_KEYS)
    doc_chars = spec_int(name, spec, "doc_chars", 2000, lo=100)
    n_docs = spec_int(name, spec, "n_docs", None, lo=1)
    seed = spec_int(name, spec, "seed", 0)
    docs = pydoc_documents(doc_chars)  # type: ignore[arg-type]
    keep = pick_docs(np.array([len(d) for d in docs]), n_docs, None, seed)
    resolved = {"source": "pydoc", "doc_chars": doc_chars, "n_docs": n_docs, "seed": seed}
    return make_dataset(
        name,
        texts=[docs[i] for i in keep],
        meta={"source": "pydoc", "spec": resolved, "python": sys.version.split()[0]},
    )


def corpus_text(spec: dict, name: str = "corpus") -> str:
    """The texts of a text dataset spec (e.g. wordnet train) joined with newlines, for LM training and bpb."""
    from prh.data import load_dataset

    ds = load_dataset(name, spec)
    if ds.texts is None:
        raise PrhError(f"{field_name(name, 'source')}: {spec.get('source')!r} has no texts to use as a corpus")
    return "\n".join(ds.texts)
