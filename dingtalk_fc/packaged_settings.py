"""Settings baked into the code package by ``make package``, applied to ``os.environ`` by ``index``.

Funcraft's plain ``fun deploy`` substitutes nothing in ``template.yml``, so the secrets cannot be
template values without sitting in a tracked file; ``make package`` writes them from the
untracked ``.env`` into the python3 zip instead (see docs/deploy.md). A variable set on the
function itself wins. Without the file (the python3.10 zip, tests, the dev kit) nothing changes.
"""

import json
import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import MutableMapping

FILE_NAME = "packaged_settings.json"
# At the top of the package, next to index.py: FC's code directory, never the repository.
PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), FILE_NAME)


def apply(path: str = PATH, environ: "MutableMapping[str, str]" = os.environ) -> None:
    """Set each packaged variable that the function's environment does not set already."""
    try:
        with open(path, encoding="utf-8") as source:
            settings = json.load(source)
    except FileNotFoundError:
        return
    for name, value in settings.items():
        environ.setdefault(name, value)
