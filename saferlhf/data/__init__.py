"""Data layer: record schemas, loaders validated at load time, and ``saferlhf data check``.

    from saferlhf.data import load_preference_pairs
    pairs = load_preference_pairs("../shared/data/pku-saferlhf/sample-v1.jsonl", kind="cost")
    pairs[0].chosen          # the SAFER response; pairs[0].chosen_is_safe, .rejected_is_safe
    pairs.report.summary()   # records read / kept / dropped and why

See docs/data.md for the formats, the validation rules and the PKU v1 -> BeaverTails mapping.
"""

from saferlhf.data.loaders import (
    FORMATS, Loaded, detect_format, load_hh_rlhf, load_preference_pairs, load_prompts,
    load_safety_preferences, load_sft_records,
)
from saferlhf.data.schema import (
    BEAVERTAILS_SLUGS, HARM_CATEGORIES, PKU_V1_TO_BEAVERTAILS, PreferencePair, PromptRecord, SafetyPreference,
    SFTRecord, to_beavertails,
)
from saferlhf.data.validate import CheckReport, DataValidationError, LoadReport, Problem, check_file

__all__ = [
    "BEAVERTAILS_SLUGS", "FORMATS", "HARM_CATEGORIES", "PKU_V1_TO_BEAVERTAILS", "CheckReport",
    "DataValidationError", "LoadReport", "Loaded", "PreferencePair", "Problem", "PromptRecord", "SFTRecord",
    "SafetyPreference", "check_file", "detect_format", "load_hh_rlhf", "load_preference_pairs", "load_prompts",
    "load_safety_preferences", "load_sft_records", "to_beavertails",
]
