"""The product suite's own handlers: one for every catalog event type and a catch-all.

The suite runs the pipeline, the dev kit and the local server over this router, never over the
shipped ``handlers.py``, so a team can replace that file without breaking the product's tests
(``handler_tests/`` holds the tests of the shipped handlers, which a team replaces with its own).
"""

from dingtalk_fc import Event, Router
from dingtalk_fc.events import URL_CHECKS
from dingtalk_fc_dev import catalog

HANDLED_BY = "handled_by"

router = Router()


@router.on(*[event_type for event_type in catalog.event_types() if event_type not in URL_CHECKS])
def catalog_event(event: Event) -> dict:
    return {HANDLED_BY: "catalog"}


@router.catch_all
def anything_else(event: Event) -> dict:
    return {HANDLED_BY: "catch_all"}
