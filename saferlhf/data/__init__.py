"""Data layer: record schemas, loaders validated at load time, and ``saferlhf data check``.

    from saferlhf.data import load_preference_pairs, split_pairs
    pairs = load_preference_pairs("../shared/data/pku-saferlhf/sample-v1.jsonl", kind="cost")
    pairs[0].chosen          # the SAFER response; pairs[0].chosen_is_safe, .rejected_is_safe
    pairs.report.summary()   # records read / kept / dropped and why
    train, held_out = split_pairs(pairs, eval_ratio=0.1, seed=0)   # no prompt on both sides

    from saferlhf.data import load_labelled_responses, split_by_prompt
    responses = load_labelled_responses("../shared/data/dices/dices350_filtered.csv")   # per-response labels
    train, val, test = split_by_prompt(responses, test_ratio=0.2, eval_ratio=0.1)       # same part in every file

See docs/data.md for the formats, the validation rules, the PKU v1 -> BeaverTails mapping and the per-response
safety labels of the shared files.
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
from saferlhf.data.labelled import (
    LabelColumns, LabelledResponse, RefusalLabel, is_labelled_file, load_labelled_responses, load_refusal_labels,
)
from saferlhf.data.split import prompt_bucket, split_by_prompt, split_pairs
from saferlhf.data.validate import (
    CheckReport, DataFileError, DataValidationError, LoadReport, Problem, UnknownFormatError,
)

__all__ = [
    "BEAVERTAILS_SLUGS", "FORMATS", "HARM_CATEGORIES", "PKU_V1_TO_BEAVERTAILS", "CheckReport", "DataFileError",
    "DataValidationError", "LabelColumns", "LabelledResponse", "LoadReport", "Loaded", "PreferencePair", "Problem",
    "PromptRecord", "RefusalLabel", "ResponsePair", "SFTRecord", "SafetyPreference", "UnknownFormatError",
    "check_file", "detect_format", "find_duplicates", "is_labelled_file", "load_hh_rlhf", "load_labelled_responses",
    "load_preference_pairs", "load_prompts", "load_refusal_labels", "load_response_pairs", "load_safety_preferences",
    "load_sft_records", "prompt_bucket", "split_by_prompt", "split_pairs", "to_beavertails",
]
