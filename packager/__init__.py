"""packager: any upload into adaptive-bitrate HLS (CMAF fMP4), decoding the source once."""

from packager.ladder import DEFAULT_LADDER, Rung
from packager.pipeline import PackageResult, PackagingError, package

__all__ = ["DEFAULT_LADDER", "Rung", "PackageResult", "PackagingError", "package"]
