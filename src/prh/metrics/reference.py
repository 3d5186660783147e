"""docs/metrics.md, generated from the metric registry (``metrics_page()``); tests/test_measures_docs.py fails when
the file on disk differs. Plain GitHub-flavoured markdown, relative links only."""

from __future__ import annotations

from prh.metrics.descriptions import DOCS
from prh.metrics.registry import RECORDS, Metric

INTRO = """# Alignment measures

Generated from the metric registry (`prh.metrics.registry`) by `prh.metrics.reference.metrics_page()`; do not edit by
hand (`tests/test_measures_docs.py` fails when this page is stale). The definitions follow METRICS.md (shared/).

Every measure scores two models' features on the same n inputs, A = model_x (n x d_a) and B = model_y (n x d_b), after
prh's preprocessing (95% clipping, unit-norm rows, the concatenated layer appended), over all layer pairs; the
model-level score is the maximum. **Calibration** draws K permutations of the inputs, reorders the rows of every layer
of one side alike (B by default; A by the inverse permutation where it holds fewer layers, which every measure's
joint-reordering invariance makes equal), rescores all layer pairs and takes the same maximum: the null of the
maximum. **Bootstrap** intervals resample the inputs with replacement and re-take the maximum. A measure's own state
says how a permutation or a resample acts on it, so nothing a permutation leaves unchanged is recomputed.

`benchmarks/peers.py` compares every measure with the libraries below on the same features (agreement and speed);
`tests/test_peers.py` asserts the agreement with the installed ones (rsatoolbox, dcor, scikit-learn) to 1e-6, or the
documented difference.

| measure | range | symmetric | chance (one layer pair) | parameters |
|---|---|---|---|---|
"""


def _first_line(text: str | None) -> str:
    """The first paragraph of a docstring on one line, without its trailing period."""
    paragraph = (text or "").strip().split("\n\n")[0]
    return " ".join(line.strip() for line in paragraph.splitlines()).rstrip(".")


def _chance(record: Metric) -> str:
    """The chance level as the record's chance function states it."""
    return _first_line(record.chance.__doc__)


def _params(record: Metric) -> str:
    """'name = default' of the configurable parameters."""
    shown = [f"`{p.name}` = {p.default!r}" for p in record.params if p.configurable]
    return ", ".join(shown) or "none"


def _symmetry(record: Metric) -> str:
    """'yes' or the orientation of an asymmetric measure."""
    return "yes" if record.symmetric else f"no: {record.orientation or 'model_x first'}"


def _summary_row(record: Metric) -> str:
    """One row of the overview table."""
    doc = DOCS[record.name]
    name = f"[`{record.name}`](#{record.name})"
    return f"| {name} | {doc.value_range} | {_symmetry(record)} | {_chance(record)} | {_params(record)} |"


def _permutes(record: Metric) -> str:
    """What the calibration's permutation acts on, for this measure."""
    side = "always model_y's rows" if record.permute_side == "y" else "model_y's rows (or model_x's, by the inverse)"
    return f"{side}; {_first_line(record.permute_state.__doc__)}"


def _section(record: Metric) -> str:
    """The section of one measure."""
    doc = DOCS[record.name]
    lines = [f"## {record.name}", "", f"{record.description}.", "",
             f"- **Formula**: {doc.formula}.", f"- **Range**: {doc.value_range}; maximum {record.max_value:g}.",
             f"- **Chance level**: {_chance(record)}.", f"- **Symmetric**: {_symmetry(record)}.",
             f"- **Minimum n**: {record.min_n}."]  # fmt: skip
    for p in record.params:
        if p.configurable:
            lines.append(f"- **Parameter `{p.name}`** (default {p.default!r}): {p.description}.")
    lines += [f"- **Calibration permutes**: {_permutes(record)}.",
              f"- **Bootstrap**: {_first_line(record.resample_state.__doc__)}.",
              f"- **Cost**: {doc.cost}.",
              f"- **Large n**: {'a bounded-memory form (`prh.metrics.large_n_layerwise`)' if record.large_n else 'dense only; `layerwise` refuses in one line when it would not fit in memory'}."]  # fmt: skip
    if doc.peers:
        lines += ["- **Peers**:"]
        lines += [f"  - {p.library}: `{p.function}`" + (f" (differs: {p.difference})" if p.difference else "")
                  for p in doc.peers]  # fmt: skip
    return "\n".join(lines)


MANY_TO_MANY = """## Many-to-many protocol (several captions per image)

Every measure above is **one-to-one**: row i of A and row i of B describe the same input, one row each. With m
captions per image (`prh.tts`, [test-time scaling](test-time-scaling.md)) prh offers two ways to use them:

- **pooled one-to-one**: B's row i is the mean of item i's first c caption features (c = 1, ..., m), then any
  measure above, unchanged;
- **many-to-many mutual kNN** (`prh.metrics.knn.many_to_many_mutual_knn`): every caption is its own row of B
  (n m rows, item-major). An image's k neighbours N_A(i) are the k most similar other images (inner product of
  prepared rows, ties to the smaller index). A caption r of item i gets k neighbour *items* N_B(r): the k other
  items whose most similar caption is most similar to r (an item's similarity to r is the maximum over its captions;
  none of item i's own captions take part). The caption's score is |N_A(i) & N_B(r)| / k, an item's score the mean
  over its m captions, and the measure the mean over items; all layer pairs, the maximum as the model-level score.
  With m = 1 it equals `mutual_knn` exactly (`tests/test_tts.py` checks this and checks the vectorised form against
  a loop over captions). Range [0, 1]; chance k / (n - 1) as for `mutual_knn`. Calibrated as the one-to-one
  scores are (`prh.tts.many_to_many_calibrated`): the null permutes item identity on the caption side, each item's
  m captions moving together (its item neighbours relabelled), and rescores the maximum over all layer pairs, so
  the null is that of the statistic reported; the bootstrap resamples items with their captions (copies of an item
  are never neighbours) for the re-centred percentile interval; tau, p-value and calibrated score as for every
  measure (above). `tests/test_tts.py` checks the null against the score recomputed on permuted caption sets, the
  resampled neighbours against a masked sort, and the level: over 100 independent-Gaussian data sets the p-values
  are uniform and p <= 0.05 is rejected within the binomial spread of 5%."""


def metrics_page() -> str:
    """The markdown of docs/metrics.md: an overview table, one section per registry record, the many-to-many
    protocol."""
    table = "\n".join(_summary_row(r) for r in RECORDS)
    sections = "\n\n".join(_section(r) for r in RECORDS)
    return f"{INTRO}{table}\n\n{sections}\n\n{MANY_TO_MANY}\n"
