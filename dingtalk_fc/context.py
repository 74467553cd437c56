"""What FC's invocation context tells, the same for every adapter and entry point: the request
id, the function's timeout, and which FC (2.0 or 3.0) is calling where the context shows it."""

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import Any, Optional

FC2, FC3 = "2.0", "3.0"


def request_id_of(context: "Any") -> str:
    """FC's request id from the context; a fresh one where there is no context."""
    request_id = getattr(context, "request_id", None)
    return request_id if isinstance(request_id, str) and request_id else "local-" + os.urandom(12).hex()


def function_timeout_of(context: "Any") -> "Optional[float]":
    """The function's timeout in seconds, where the context says it."""
    timeout = getattr(getattr(context, "function", None), "timeout", None)
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0:
        return float(timeout)
    return None


def platform_of(context: "Any") -> "Optional[str]":
    """FC 3.0 where the context can only be FC 3.0's (Python 3.12's: no ``service``, no
    ``credentials``); None where it cannot tell (FC 3.0's 3.9/3.10 contexts look like FC 2.0's)."""
    if getattr(context, "request_id", None) is None:
        return None  # no FC context at all (a local run)
    if not hasattr(context, "service") and not hasattr(context, "credentials"):
        return FC3
    return None
