"""packager: any upload into adaptive-bitrate HLS (CMAF fMP4), decoding the source once."""

from packager.errors import PackagingError
from packager.ladder import DEFAULT_LADDER, Rung
from packager.packaging import package
from packager.pipeline import PackageResult
from packager.source import Limits

__all__ = ["DEFAULT_LADDER", "Limits", "Rung", "PackageResult", "PackagingError", "package"]
