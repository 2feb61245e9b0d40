import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=100
)
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=60)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture
def count_preads(monkeypatch):
    """Patch ``os.pread`` to record the size of every read; returns the list of sizes (call
    ``monkeypatch.undo()`` to stop counting before the assertions)."""
    sizes: list[int] = []
    real_pread = os.pread

    def counting_pread(fd, n, position):
        data = real_pread(fd, n, position)
        sizes.append(len(data))
        return data

    monkeypatch.setattr(os, "pread", counting_pread)
    return sizes
