"""The synthetic safety world: prompts with known intent, responses of known kinds, a ground-truth
oracle and a simulated annotator panel that writes PKU-SafeRLHF records (docs/world.md).

    from saferlhf.world import build_world, Oracle
    world = build_world(0)
    p = world.prompts("train")[0]
    r = world.sample_response(p, "harmful" if p.kind == "harmful" else "helpful", random.Random(0))
    Oracle(world).judge(p.text, r)   # Judgement(helpfulness, harmful, categories, severity, refusal, ...)

``AnnotatorPanel`` implements the ``saferlhf.annotate.Annotator`` protocol; ``SimulatedAnnotator`` is one
simulated crowdworker of the panel.
"""

from saferlhf.data.schema import HARM_CATEGORIES
from saferlhf.world.annotators import AnnotatorPanel, SimulatedAnnotator, default_panel
from saferlhf.world.core import World, build_world
from saferlhf.world.oracle import Judgement, Oracle
from saferlhf.world.prompts import PROMPT_KINDS, WorldPrompt
from saferlhf.world.responses import RESPONSE_KINDS

__all__ = ["AnnotatorPanel", "SimulatedAnnotator", "default_panel", "HARM_CATEGORIES", "World",
           "build_world", "Judgement", "Oracle", "PROMPT_KINDS", "WorldPrompt", "RESPONSE_KINDS"]
