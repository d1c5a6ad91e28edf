"""The recipe fixtures (`tiny_models`, `sft_file`, `pku_file`) live in ../conftest.py (shared with tests/faults)."""
