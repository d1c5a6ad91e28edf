"""Annotators: the interface that labels response pairs into PKU-SafeRLHF records, independent of
where the labels come from (docs/annotate.md).

    from saferlhf.annotate import Annotator, label_pairs
    records, stats = label_pairs(panel, [(prompt, response_0, response_1), ...])   # any Annotator

* ``base``: the ``Annotator`` protocol (``annotate(pairs) -> (records, stats)``) and ``label_pairs``,
  which runs one and checks its records. ``saferlhf.world.AnnotatorPanel`` (simulated crowdworkers)
  is one; an LLM judge (RLAIF) and a human web app are to come.
* ``labels``: the per-annotator ``Label``, majority aggregation into one record, agreement statistics.
"""

from saferlhf.annotate.base import Annotator, Pair, label_pairs
from saferlhf.annotate.labels import (RECORD_KEYS, Label, aggregate, agreement, fleiss_kappa, majority,
                                      pairwise_agreement, record_label)

__all__ = ["Annotator", "Pair", "label_pairs", "RECORD_KEYS", "Label", "aggregate", "agreement", "fleiss_kappa",
           "majority", "pairwise_agreement", "record_label"]
