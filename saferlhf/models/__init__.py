"""Models by role, all plain Hugging Face objects (every checkpoint loads with ``AutoModelFor*`` / ``AutoTokenizer``).

    saferlhf.models.policy      load_policy, save_policy                   (the actor, the reference, SFT)
    saferlhf.models.score       ScoreModel, score_texts, load_judge         (reward, cost, critics)
    saferlhf.models.tokenizers  train_tokenizer, load_tokenizer             (pad token handling)
    saferlhf.models.tiny        create_tiny_model, build_tiny_model         (tests, demo, benchmarks)
    saferlhf.models.lora        apply_lora, merge_lora                      (peft, optional)
    saferlhf.models.hf          check_model_path, ModelPathError, ...       (shared plumbing)

The names below are re-exported for users (``from saferlhf.models import ScoreModel``); library code imports
the module that owns a name. Prompt formatting and the (prompt, response) encoding live in
`saferlhf.data.formatting`.
"""

from saferlhf.models.hf import MODEL_PATH_EXPECTED, ModelPathError, check_finite_weights, check_model_path, model_path_problem
from saferlhf.models.lora import apply_lora, merge_lora
from saferlhf.models.policy import load_policy, save_policy
from saferlhf.models.score import COST_SIGN_CONVENTION, SCORE_TYPES, ScoreModel, ScoreOutput, load_judge, score_texts
from saferlhf.models.tiny import build_tiny_model, create_tiny_model
from saferlhf.models.tokenizers import SPECIAL_TOKENS, load_tokenizer, train_tokenizer

__all__ = [
    "COST_SIGN_CONVENTION", "MODEL_PATH_EXPECTED", "ModelPathError", "SCORE_TYPES", "SPECIAL_TOKENS", "ScoreModel",
    "ScoreOutput", "apply_lora", "build_tiny_model", "check_finite_weights", "check_model_path", "create_tiny_model",
    "load_judge", "load_policy", "load_tokenizer", "merge_lora", "model_path_problem", "save_policy", "score_texts",
    "train_tokenizer",
]
