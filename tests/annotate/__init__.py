"""The annotation app's tests (a package, so that their file names, e.g. test_api.py, may repeat tests/recipes')."""
