"""A handler that counts its runs, and a router around one, for tests of running exactly once."""

import threading

from dingtalk_fc import Router

APPROVAL = {"EventType": "bpms_instance_change", "eventId": "appr-1", "processInstanceId": "pi-1"}


class Counter:
    """A handler that counts its runs; fails the first ``failures`` calls; may wait on a gate."""

    def __init__(self, failures=0, gate=None, returns=None):
        self.failures, self.gate, self.returns = failures, gate, returns
        self.calls, self.finished = [], []
        self.lock = threading.Lock()

    def __call__(self, event):
        with self.lock:
            self.calls.append(event.key)
            attempt = len(self.calls)
        if self.gate is not None:
            self.gate.wait(10)
        if attempt <= self.failures:
            raise RuntimeError("downstream unavailable")
        self.finished.append(event.key)
        return self.returns


def router_for(handler, event_type="user_add_org", deferred=None):
    router = Router()
    router.on(event_type, deferred=deferred)(handler)
    return router
