"""pytest fixtures for your handlers, registered through the ``pytest11`` entry point of the
installed project (``make`` installs it in ``.venv``): any test folder gets them.

* ``dingtalk_router``: the router under test, ``handlers.router`` (override it in a ``conftest.py``);
* ``dingtalk_environment``: the function's DINGTALK_* variables (the demo keys);
* ``callback_harness``: that router behind the real callback and WSGI adapter; deferred handlers
  run through the real deferral payload and worker entrypoint on a thread
  (``callback_harness.wait_for_workers()``).
"""

from typing import Any, Dict

import pytest

from .demo import DEMO_ENVIRONMENT
from .testkit import CallbackHarness


@pytest.fixture
def dingtalk_router() -> Any:
    import handlers

    return handlers.router


@pytest.fixture
def dingtalk_environment() -> Dict[str, str]:
    return dict(DEMO_ENVIRONMENT)


@pytest.fixture
def callback_harness(dingtalk_router: Any, dingtalk_environment: Dict[str, str]) -> CallbackHarness:
    return CallbackHarness(dingtalk_router, dingtalk_environment, run_deferred=True)
