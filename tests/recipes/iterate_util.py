"""An annotator factory for `saferlhf iterate --annotator iterate_util:two_rater_panel` in the tests."""

from __future__ import annotations


def two_rater_panel(world, seed):
    """The simulated panel with its first two raters only: any `Annotator` can label the rounds' pairs."""
    from saferlhf.world.annotators import AnnotatorPanel, default_panel

    return AnnotatorPanel(world, seed=seed, annotators=default_panel()[:2])


def not_an_annotator(world, seed):
    return object()
