"""Personal data: detection (`detector`), per-app policy (`policy`), and what is done to the text
(`pseudonyms`: stable placeholders, redaction, and their restoration in streams).

Beside `security/`, below the kernel: the kernel's system calls apply an app's policy once, on the
way to the model, the stores and the audit log, and on the way back to the app.
"""

from llmasos.privacy.entities import ENTITY_TYPES, Detection
from llmasos.privacy.policy import DIRECTIONS, MODES, PiiPolicy

__all__ = ["DIRECTIONS", "ENTITY_TYPES", "MODES", "Detection", "PiiPolicy"]
