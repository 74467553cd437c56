"""pytest fixtures for your handlers: add ``pytest_plugins = ["dingtalk_fc_dev.pytest_plugin"]``
to your ``conftest.py``.

* ``dingtalk_environment``: the function's DINGTALK_* variables (the demo keys);
* ``callback_harness``: your ``handlers.router`` behind the real pipeline and WSGI adapter.
"""

from typing import Dict

import pytest

from .demo import DEMO_ENVIRONMENT
from .testkit import CallbackHarness


@pytest.fixture
def dingtalk_environment() -> Dict[str, str]:
    return dict(DEMO_ENVIRONMENT)


@pytest.fixture
def callback_harness(dingtalk_environment: Dict[str, str]) -> CallbackHarness:
    import handlers

    return CallbackHarness(handlers.router, dingtalk_environment)
