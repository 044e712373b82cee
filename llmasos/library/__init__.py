"""The model library: pull models into `$LLMASOS_HOME/models`, list, show and remove them.

`ModelStore` is the entry point; `ModelManifest` is what it knows about each model.
"""

from llmasos.library.catalog import CATALOG, DEFAULT_ALIAS, CatalogEntry, resolve_alias
from llmasos.library.manifest import ModelManifest
from llmasos.library.store import ModelStore

__all__ = ["CATALOG", "DEFAULT_ALIAS", "CatalogEntry", "ModelManifest", "ModelStore", "resolve_alias"]
