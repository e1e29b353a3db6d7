"""One line of ``edge-agent doctor``'s report: ``Check`` and its statuses (OK, WARN, FAIL)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

OK, WARN, FAIL = "OK", "WARN", "FAIL"


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str  # what was checked, e.g. "onnxruntime"
    status: str  # OK | WARN | FAIL
    detail: str  # what was seen
    fix: str = ""  # what to do about a WARN or FAIL

    def line(self) -> str:
        """``STATUS name: detail [-> fix]`` as printed."""
        text = "%-4s %s: %s" % (self.status, self.name, self.detail)
        return text + ("\n     fix: " + self.fix if self.fix else "")

    def to_json(self) -> Dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}
