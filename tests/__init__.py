"""The test suite.

The helper modules below are full of assertions; registering them before anything
imports them makes pytest explain their failures as it does a test's own.
"""

import pytest

pytest.register_assert_rewrite("tests.cache_contract", "tests.webapp")
