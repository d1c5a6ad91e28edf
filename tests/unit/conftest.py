"""Fixtures shared by the unit tests: the seed-0 synthetic world and its oracle (built once)."""

import pytest

from saferlhf.world import Oracle, build_world


@pytest.fixture(scope="session")
def world():
    return build_world(0)


@pytest.fixture(scope="session")
def oracle(world):
    return Oracle(world)
