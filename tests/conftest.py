import os
import tempfile

# A private matplotlib cache per test session: a font cache left by another environment
# (another virtualenv at the same path) cannot leak in.
os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="mpl-")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def x64():
    """Run a test with 64-bit floats enabled (restored afterwards)."""
    with jax.enable_x64(True):
        yield
