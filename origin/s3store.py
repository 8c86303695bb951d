"""The S3 object store: any S3-compatible endpoint, through aiobotocore.

Command-line form: `s3://BUCKET[/PREFIX][?endpoint=URL&addressing=path|virtual|auto&region=R]`.
Without `endpoint` the standard `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` variables (or AWS
itself) apply; credentials and region come from the standard AWS environment and config files.

One client per store, opened on first use in the running event loop and released by `close()`.
Writes go up in `part_size` parts (a multipart upload once an object outgrows one part), so a
write holds a few parts in memory at most, whatever the object's size; a failed or cancelled
write aborts its upload, so nothing partial is ever visible. Reads are ranged GETs whose body
is streamed in chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiobotocore.session
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from origin.base import CHUNK, ObjectInfo, Store, StoreError, TooLarge, check_key, check_prefix, check_tree
from reel.logs import fields

log = logging.getLogger("reel.origin.s3")

PART_SIZE = 8 * 1024 * 1024  # S3's smallest part is 5 MiB (except the last)
DELETE_BATCH = 1000  # DeleteObjects' limit
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_ADDRESSING = ("auto", "path", "virtual")
_MISSING = ("404", "NoSuchKey", "NotFound")


class S3Store(Store):
    """Objects in `bucket` under `prefix` (keys of origin.layout appended to it)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        addressing: str = "auto",
        region: str | None = None,
        part_size: int = PART_SIZE,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 4,
        max_connections: int = 32,
        connector_args: dict[str, Any] | None = None,
    ) -> None:
        """`connector_args` go to aiohttp's connector (for example a DNS resolver)."""
        if not _BUCKET.fullmatch(bucket):
            raise StoreError(f"not an S3 bucket name: {bucket!r}")
        prefix = prefix.strip("/")
        if prefix and (".." in prefix.split("/") or "//" in prefix or "\\" in prefix):
            raise StoreError(f"not a usable key prefix: {prefix!r}")
        if addressing not in _ADDRESSING:
            raise StoreError(f"addressing must be one of {', '.join(_ADDRESSING)}, not {addressing!r}")
        if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
            raise StoreError(f"endpoint must be an http:// or https:// URL, not {endpoint!r}")
        if part_size < 5 * 1024 * 1024:
            raise StoreError("part_size must be at least 5 MiB (S3's smallest part)")
        self.bucket = bucket
        self.prefix = prefix + "/" if prefix else ""
        self.endpoint = endpoint
        self.addressing = addressing
        self.region = region
        self.part_size = part_size
        self._config = AioConfig(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            max_pool_connections=max_connections,
            s3={"addressing_style": addressing},
            # The newer default checksums (CRC trailers) are refused by many S3-compatible servers.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connector_args=connector_args,
        )
        self._client: Any = None
        self._exit: contextlib.AsyncExitStack | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: asyncio.Lock | None = None

    @classmethod
    def from_url(cls, spec: str) -> S3Store:
        """From `s3://BUCKET/PREFIX?endpoint=URL&addressing=...&region=...`."""
        parts = urlsplit(spec)
        if parts.scheme != "s3" or not parts.netloc:
            raise StoreError(f"not an S3 store URL (s3://BUCKET/PREFIX): {spec!r}")
        try:
            query = parse_qs(parts.query, strict_parsing=bool(parts.query), max_num_fields=8)
        except ValueError as exc:
            raise StoreError(f"{spec!r}: bad query string ({exc})") from None
        unknown = set(query) - {"endpoint", "addressing", "region"}
        if unknown:
            raise StoreError(f"{spec!r}: unknown parameter {', '.join(sorted(unknown))} "
                             "(known: endpoint, addressing, region)")
        options = {name: values[-1] for name, values in query.items()}
        return cls(parts.netloc, parts.path, **options)

    def __repr__(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"S3Store(s3://{self.bucket}/{self.prefix}{where})"

    async def _s3(self) -> Any:
        """The client, opened on first use in this event loop (it belongs to that loop)."""
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop:
            raise StoreError(f"{self!r} is open in another event loop; open one store per loop")
        if self._client is not None:
            return self._client
        self._loop = loop
        self._opening = self._opening or asyncio.Lock()
        async with self._opening:
            if self._client is None:
                session = aiobotocore.session.get_session()
                # A custom endpoint still signs with a region; us-east-1 is what such servers expect.
                region = self.region or session.get_config_variable("region") or "us-east-1"
                stack = contextlib.AsyncExitStack()
                try:
                    self._client = await stack.enter_async_context(session.create_client(
                        "s3", endpoint_url=self.endpoint, region_name=region, config=self._config))
                except (BotoCoreError, ValueError) as exc:
                    await stack.aclose()
                    self._loop = None
                    raise StoreError(f"{self!r}: cannot open the S3 client: {exc}") from exc
                self._exit = stack
        return self._client

    async def close(self) -> None:
        if self._exit is not None:
            exit_stack, self._exit, self._client = self._exit, None, None
            await exit_stack.aclose()
        self._loop = self._opening = None  # free to open again, in any loop

    def _object(self, key: str) -> str:
        check_key(key)
        return self.prefix + key

    def _fail(self, action: str, key: str, exc: Exception) -> StoreError:
        return StoreError(f"{self!r}: {action} {key}: {exc}")

    async def stat(self, key: str) -> ObjectInfo | None:
        name = self._object(key)
        s3 = await self._s3()
        try:
            head = await s3.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _missing(exc):
                return None
            raise self._fail("HEAD", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("HEAD", key, exc) from exc
        return ObjectInfo(key=key, size=head["ContentLength"], mtime=head["LastModified"].timestamp(),
                          etag=head["ETag"])

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        name = self._object(key)
        s3 = await self._s3()
        if end is not None and end <= start:
            if await self.stat(key) is None:  # nothing to read, but a missing object still says so
                raise FileNotFoundError(key)
            return
        request = {"Bucket": self.bucket, "Key": name}
        if start or end is not None:
            request["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            response = await s3.get_object(**request)
        except ClientError as exc:
            if _missing(exc):
                raise FileNotFoundError(key) from None
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return  # start at or past the end: nothing, as a file read there gives
            raise self._fail("GET", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("GET", key, exc) from exc
        body = response["Body"]
        try:
            async for block in body.iter_chunks(CHUNK):
                yield block
        except (BotoCoreError, OSError, TimeoutError) as exc:
            raise self._fail("GET body of", key, exc) from exc
        finally:
            body.close()

    async def write(
        self, key: str, chunks: AsyncIterable[bytes], max_bytes: int | None = None
    ) -> ObjectInfo:
        name = self._object(key)
        s3 = await self._s3()
        upload = _Upload(s3, self.bucket, name)
        buffer = bytearray()
        size = 0
        try:
            async for block in chunks:
                size += len(block)
                if max_bytes is not None and size > max_bytes:
                    raise TooLarge(f"{key}: over {max_bytes} bytes")
                buffer += block
                while len(buffer) >= self.part_size:
                    with memoryview(buffer) as view:  # one copy of the part, not two
                        part = bytes(view[: self.part_size])
                    del buffer[: self.part_size]
                    await upload.part(part)
            if upload.id is None:  # it fitted in one part: one PUT
                await s3.put_object(Bucket=self.bucket, Key=name, Body=bytes(buffer))
            else:
                if buffer:
                    await upload.part(bytes(buffer))
                await upload.complete()
        except BaseException as exc:
            if upload.id is not None:
                # Shielded: a second cancellation must not leave the parts behind.
                await asyncio.shield(upload.abort())
            if isinstance(exc, ClientError | BotoCoreError):
                raise self._fail("PUT", key, exc) from exc
            raise
        info = await self.stat(key)
        if info is None:
            raise StoreError(f"{self!r}: {key} is missing right after it was written")
        return info

    async def delete_prefix(self, prefix: str) -> int:
        check_prefix(prefix)
        s3 = await self._s3()
        count = 0
        try:
            async for page in self._pages(s3, prefix):
                names = [{"Key": name} for name in page]
                for first in range(0, len(names), DELETE_BATCH):
                    batch = names[first : first + DELETE_BATCH]
                    result = await s3.delete_objects(Bucket=self.bucket,
                                                     Delete={"Objects": batch, "Quiet": True})
                    if errors := result.get("Errors"):
                        raise StoreError(f"{self!r}: DELETE {errors[0].get('Key')}: "
                                         f"{errors[0].get('Code')} {errors[0].get('Message')}")
                    count += len(batch)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("DELETE", prefix, exc) from exc
        return count

    async def _pages(self, s3: Any, prefix: str) -> AsyncIterator[list[str]]:
        """The object names under `prefix`, a listing page at a time."""
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
        async for page in pages:
            yield [item["Key"] for item in page.get("Contents", ())]

    async def copy_prefix(self, source: str, target: str) -> int:
        check_tree(source)
        check_tree(target)
        s3 = await self._s3()
        copied: list[str] = []
        try:
            start = len(self.prefix + source)
            names = [name[start:] async for page in self._pages(s3, source) for name in page]
            # Server-side copies; the master last, as a packager writes it.
            for rel in sorted(names, key=lambda rel: rel == "master.m3u8"):
                key = self._object(target + rel)
                await s3.copy_object(Bucket=self.bucket, Key=key,
                                     CopySource={"Bucket": self.bucket, "Key": self.prefix + source + rel})
                copied.append(target + rel)
        except BaseException as exc:
            if copied:
                await asyncio.shield(self.delete_prefix(target))
            if isinstance(exc, ClientError | BotoCoreError):
                raise self._fail("COPY", source, exc) from exc
            raise
        return len(copied)


class _Upload:
    """One multipart upload, created with its first part."""

    def __init__(self, s3: Any, bucket: str, name: str) -> None:
        self.s3, self.bucket, self.name = s3, bucket, name
        self.id: str | None = None
        self.parts: list[dict[str, Any]] = []

    async def part(self, data: bytes) -> None:
        if self.id is None:
            created = await self.s3.create_multipart_upload(Bucket=self.bucket, Key=self.name)
            self.id = created["UploadId"]
        number = len(self.parts) + 1
        done = await self.s3.upload_part(Bucket=self.bucket, Key=self.name, UploadId=self.id,
                                         PartNumber=number, Body=data)
        self.parts.append({"PartNumber": number, "ETag": done["ETag"]})

    async def complete(self) -> None:
        await self.s3.complete_multipart_upload(Bucket=self.bucket, Key=self.name, UploadId=self.id,
                                                MultipartUpload={"Parts": self.parts})

    async def abort(self) -> None:
        try:
            await self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.name, UploadId=self.id)
        except (ClientError, BotoCoreError) as exc:
            # A bucket lifecycle rule (AbortIncompleteMultipartUpload) sweeps what is left.
            log.warning("multipart abort failed", extra=fields(key=self.name, error=str(exc)))


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in _MISSING

