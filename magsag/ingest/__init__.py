"""Getting data into the storage layer from outside: the legacy ``.runs`` importer."""

from magsag.ingest.legacy import LegacyImporter, import_legacy
from magsag.ingest.legacy_reader import Rejection
from magsag.ingest.legacy_report import ImportReport

__all__ = ["ImportReport", "LegacyImporter", "Rejection", "import_legacy"]
