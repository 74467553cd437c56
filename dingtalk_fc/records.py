"""One JSON line per delivery on stdout, which FC ships to the function's Logstore.

Written straight to stdout rather than through ``logging``: the runtime's root logger prefixes
its lines, and a bare JSON line is what SLS's ``json_extract`` and field indexes read.
"""

import json
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing at run time costs cold start
    from typing import IO, Any, Mapping, Optional

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


class RecordWriter:
    """Writes records as single JSON lines; ``stream`` defaults to the current ``sys.stdout``."""

    def __init__(self, stream: "Optional[IO[str]]" = None) -> None:
        self._stream = stream

    def write(self, record: "Mapping[str, Any]") -> None:
        line = _ENCODER.encode(record)
        stream = self._stream or sys.stdout
        stream.write(line + "\n")
        stream.flush()
