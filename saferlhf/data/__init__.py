"""Data layer: record schemas, loaders validated at load time, and ``saferlhf data check``.

    from saferlhf.data import load_preference_pairs, split_pairs
    pairs = load_preference_pairs("../shared/data/pku-saferlhf/sample-v1.jsonl", kind="cost")
    pairs[0].chosen          # the SAFER response; pairs[0].chosen_is_safe, .rejected_is_safe
    pairs.report.summary()   # records read / kept / dropped and why
    train, held_out = split_pairs(pairs, eval_ratio=0.1, seed=0)   # no prompt on both sides

See docs/data.md for the formats, the validation rules and the PKU v1 -> BeaverTails mapping.
"""

from saferlhf.data.duplicates import find_duplicates
from saferlhf.data.loaders import (
    FORMATS, Loaded, detect_format, load_hh_rlhf, load_preference_pairs, load_prompts, load_response_pairs,
    check_file, load_safety_preferences, load_sft_records,
)
from saferlhf.data.schema import (
    BEAVERTAILS_SLUGS, HARM_CATEGORIES, PKU_V1_TO_BEAVERTAILS, PreferencePair, PromptRecord, ResponsePair,
    SafetyPreference, SFTRecord, to_beavertails,
)
from saferlhf.data.split import split_pairs
from saferlhf.data.validate import (
    CheckReport, DataFileError, DataValidationError, LoadReport, Problem, UnknownFormatError,
)

__all__ = [
    "BEAVERTAILS_SLUGS", "FORMATS", "HARM_CATEGORIES", "PKU_V1_TO_BEAVERTAILS", "CheckReport", "DataFileError",
    "DataValidationError", "LoadReport", "Loaded", "PreferencePair", "Problem", "PromptRecord", "ResponsePair",
    "SFTRecord", "SafetyPreference", "UnknownFormatError", "check_file", "detect_format", "find_duplicates",
    "load_hh_rlhf", "load_preference_pairs", "load_prompts", "load_response_pairs", "load_safety_preferences",
    "load_sft_records", "split_pairs", "to_beavertails",
]
