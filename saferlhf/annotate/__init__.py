"""Annotators: the interface that labels response pairs into PKU-SafeRLHF records, independent of
where the labels come from (docs/annotate.md).

    from saferlhf.annotate import Annotator, label_pairs
    records, stats = label_pairs(panel, [(prompt, response_0, response_1), ...])   # any Annotator

* ``base``: the ``Annotator`` protocol (``annotate(pairs) -> (records, stats)``) and ``label_pairs``,
  which runs one and checks its records. ``saferlhf.world.AnnotatorPanel`` (simulated crowdworkers)
  is one; people label through the web app (``app``: `saferlhf annotate serve`), an LLM judge through
  ``llm`` (RLAIF).
* ``labels``: the per-annotator ``Label`` (and its JSON form), majority aggregation into one record,
  agreement statistics (pairwise, Fleiss' kappa, Krippendorff's alpha).
* ``pairs``: response pairs to label (``input_pairs``, ``unique_pairs``) and their ``pair_id``.
* ``aggregate``: ``aggregate_labels``, many pairs' labels into PKU-SafeRLHF records and statistics, and
  ``load_labels`` (a ``labels.jsonl``).
* ``run``: ``saferlhf annotate run``, a resumable labelling run of any labeller (``base.Labeller``).
"""

# the module ``aggregate`` first: importing it binds ``saferlhf.annotate.aggregate`` to the module, and the
# import of the function ``labels.aggregate`` below must come after it to keep that name the function's
from saferlhf.annotate.aggregate import aggregate_labels, load_labels  # isort: skip
from saferlhf.annotate.base import Annotator, Labeller, Pair, label_pairs
from saferlhf.annotate.labels import (RECORD_KEYS, Label, aggregate, agreement, canonical_category, fleiss_kappa,
                                      krippendorff_alpha, label_from_dict, label_to_dict, majority,
                                      pairwise_agreement, record_label)

__all__ = ["Annotator", "Labeller", "Pair", "label_pairs", "RECORD_KEYS", "Label", "aggregate", "aggregate_labels",
           "agreement", "canonical_category", "fleiss_kappa", "krippendorff_alpha", "label_from_dict", "label_to_dict",
           "load_labels", "majority", "pairwise_agreement", "record_label"]
