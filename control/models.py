"""What the control API reads and writes, as pydantic models: the one place its limits live.

Request models validate strictly (`Strict`: a number is never a string, a boolean never a number),
and every rule is one JSON Schema can state (lengths, ranges, patterns, enums), so the OpenAPI
document built from these models (`control.api`) says exactly what is accepted. Text is checked
as sent, then normalised (NFC, surrounding blanks dropped). Response models describe what the
handlers answer; the schemathesis test holds the handlers to them.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

PRIVACY = ("public", "unlisted", "private")
CATEGORIES = ("music", "gaming", "education", "sports", "news", "entertainment", "film",
              "science", "travel", "people", "comedy", "howto", "animals", "other")
MAX_TAGS = 20
MAX_TAG_CHARS = 40
MAX_TITLE_CHARS = 200
MAX_COPIES = 100  # per request
MAX_VIEWERS = 500  # signed-in accounts made per request
MAX_PAGE = 100
MAX_INT = 2**63 - 1  # what a database integer holds
ID_PATTERN = "^[A-Za-z0-9_-]{1,64}$"
PREVIEW_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_-]{0,31}/index\\.m3u8$"
_LINE = "[^\\x00-\\x1f\\x7f-\\x9f]"  # any character but a control character (C0, DEL, C1)
_LINES = "[^\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]"  # the same, with tab and newline
_CONTROL = "\\x00-\\x20\\x7f-\\x9f"  # and space
_VISIBLE = "[^\\x00-\\x20\\x7f-\\x9f]"  # and not a space either


def _normalised(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip(" \t\n")


def text(max_chars: int, *, multiline: bool = False, required: bool = False) -> Any:
    """A string type: at most `max_chars` characters, no control characters (tab and newline
    too when `multiline`), not blank when `required`; normalised once valid."""
    char = _LINES if multiline else _LINE
    pattern = f"^{char}*{_VISIBLE}{char}*$" if required else f"^{char}*$"
    return Annotated[str, StringConstraints(max_length=max_chars, pattern=pattern),
                     AfterValidator(_normalised)]


Title = text(MAX_TITLE_CHARS, required=True)
Description = text(5000, multiline=True)
Tag = text(MAX_TAG_CHARS)
Name = text(100, required=True)
Bio = text(2000, multiline=True)
ReviewText = text(5000, multiline=True)
CommentText = text(2000, multiline=True, required=True)
Email = Annotated[str, StringConstraints(
    max_length=254, pattern=f"^[^@{_CONTROL}]{{1,64}}@[^@{_CONTROL}]+\\.[^@{_CONTROL}]+$"),
    AfterValidator(lambda e: unicodedata.normalize("NFC", e).lower())]
Password = Annotated[str, StringConstraints(min_length=8, max_length=1024)]
Language = Annotated[str, StringConstraints(max_length=35,
                                            pattern="^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")]
Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def integer(low: int, high: int) -> Any:
    """An integer from `low` to `high`; 3.0 is one too, as JSON Schema counts (strict mode
    alone would refuse it)."""
    return Annotated[int, Field(ge=low, le=high), BeforeValidator(_whole)]


Count = integer(0, MAX_INT)
Category = Literal[CATEGORIES]  # type: ignore[valid-type]
Privacy = Literal[PRIVACY]  # type: ignore[valid-type]
# Multipart forms and tus metadata carry tags as one comma-separated string.
_TAG = f"[^\\x00-\\x1f\\x7f-\\x9f,]{{0,{MAX_TAG_CHARS}}}"
TAG_LIST_PATTERN = f"^{_TAG}(,{_TAG}){{0,{MAX_TAGS - 1}}}$"


class Strict(BaseModel):
    model_config = ConfigDict(strict=True)


# -- requests ----------------------------------------------------------------------------------


class SignUp(Strict):
    email: Email
    password: Password
    name: Name | None = None


class SignIn(Strict):
    email: Email
    password: Annotated[str, StringConstraints(max_length=1024)]


class ProfileEdit(Strict):
    """A new `password` needs `current_password` (403 when missing or wrong)."""

    name: Name = None
    bio: Bio = None
    password: Password = None
    current_password: Annotated[str, StringConstraints(max_length=1024)] = None


class VideoFields(Strict):
    """A video's editable fields: only those sent change; `language` and `category` take null."""

    model_config = ConfigDict(strict=True, extra="forbid")

    title: Title = None
    description: Description = None
    tags: Annotated[list[Tag], Field(max_length=MAX_TAGS)] = None
    language: Language | None = None
    category: Category | None = None
    privacy: Privacy = None

    def changes(self) -> dict[str, Any]:
        """The fields sent, tags deduplicated (blank ones dropped)."""
        out = self.model_dump(include=self.model_fields_set)
        if "tags" in out:
            out["tags"] = list(dict.fromkeys(t for t in out["tags"] if t))
        return out


class VideoEdit(VideoFields):
    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra={"minProperties": 1})

    @model_validator(mode="after")
    def _something(self) -> VideoEdit:
        if not self.model_fields_set:
            raise ValueError("nothing to change: send any of " + ", ".join(VideoFields.model_fields))
        return self


class Copies(Strict):
    copies: Annotated[list[VideoFields], Field(min_length=1, max_length=MAX_COPIES)]


class Viewers(Strict):
    count: integer(1, MAX_VIEWERS)


class UploadForm(BaseModel):
    """multipart/form-data: the media in `file`, the video's fields beside it, in any order."""

    model_config = ConfigDict(extra="forbid")

    file: bytes = Field(json_schema_extra={"minLength": 1, "contentMediaType": "application/octet-stream"})
    title: Title = None
    description: Description = None
    tags: Annotated[str, StringConstraints(pattern=TAG_LIST_PATTERN)] = None
    language: Language = None
    category: Category = None
    privacy: Privacy = None


class ReviewIn(Strict):
    rating: integer(1, 5)
    text: ReviewText = ""


class RatingIn(Strict):
    rating: Literal["like", "dislike", "none"]


class CommentIn(Strict):
    text: CommentText
    parent_id: Id | None = Field(None, description="a top-level comment on the same video")


DVR_MIN, DVR_MAX = 60, 7200  # seconds a viewer may seek back into a live stream


class LiveIn(VideoFields):
    """A live stream to create: the video's fields, and how far back viewers may seek."""

    title: Title = "Live stream"
    dvr_seconds: integer(DVR_MIN, DVR_MAX) = Field(
        DVR_MAX, description="the DVR window: how many seconds viewers may seek back")


class StreamKeyIn(Strict):
    stream_key: Annotated[str, StringConstraints(min_length=1, max_length=256)] = Field(
        description="the key the publisher gave (RTMP stream name, SRT streamid)")


class IngestBeat(Strict):
    viewers: Count = Field(0, description="viewers watching now (at every edge)")


class VodFailure(Strict):
    reason: str = Field(examples=["no_segments"],
                        description="a short reason (the first 64 characters; blank: error)")
    detail: str = Field("", description="what went wrong (the first 2000 characters)")


class ClaimIn(Strict):
    worker: str = Field("unnamed", description="a name for logs (the first 128 characters)")


class Progress(Strict):
    done: Count
    total: Count


class Heartbeat(Strict):
    progress: Progress | None = None
    preview: Annotated[str, StringConstraints(pattern=PREVIEW_PATTERN)] | None = Field(
        None, examples=["v144/index.m3u8"],
        description="A rendition playlist already playable (an EVENT playlist growing while the "
                    "job runs), relative to the output prefix: the video's `preview_url` until "
                    "it is ready")


class Completion(Strict):
    duration: Annotated[float, Field(ge=0)]
    renditions: list[str] = []


class Failure(Strict):
    reason: str = Field(examples=["not_a_video"],
                        description="a short reason (the first 64 characters; blank: error)")
    detail: str = Field("", description="what went wrong (the first 2000 characters)")
    permanent: bool = False


# -- responses ---------------------------------------------------------------------------------


class Problem(BaseModel):
    """RFC 7807 problem"""

    type: str
    title: str
    status: int
    detail: str


class UserRef(BaseModel):
    id: str
    name: str


class Profile(BaseModel):
    """A user's public profile"""

    id: str
    name: str
    bio: str
    created_at: str
    followers: int
    following: int


class Me(BaseModel):
    """You"""

    id: str
    name: str
    bio: str
    email: str
    is_admin: bool
    created_at: str


class SignedUp(BaseModel):
    """Signed up"""

    user: Me


class Session(BaseModel):
    """Signed in: a bearer token with an expiry"""

    token: str
    token_type: Literal["Bearer"]
    expires_at: str
    user: Me


class Sessions(BaseModel):
    """New accounts, each signed in"""

    items: list[Session]


class Video(BaseModel):
    """A video"""

    id: str
    title: str
    state: Literal["queued", "processing", "ready", "failed", "waiting", "live"] = Field(
        description="uploads: queued, processing, ready or failed; live streams: waiting (for a "
                    "publisher), live, then processing and ready once a VOD (or failed)")
    reason: str | None = Field(description="`reason: detail` when failed")
    progress: Progress | None = Field(description="done == total once ready")
    duration: float | None
    created_at: str
    playback_url: str | None = Field(description="{geo}/steer/vod/{id}/master.m3u8 once ready: "
                                                 "the master steered between edges; a live "
                                                 "stream's {geo}/steer/live/{id}/master.m3u8 "
                                                 "while waiting or live")
    preview_url: str | None = Field(description="while processing, when the worker has one: a "
                                                "rendition playlist playable before the video is ready")
    watch_url: str
    poster_url: str | None
    owner_id: str | None
    description: str
    tags: list[str]
    language: str | None
    category: str | None
    privacy: Literal[PRIVACY]  # type: ignore[valid-type]
    views: int
    likes: int
    dislikes: int
    kind: Literal["upload", "live"]
    live: bool = Field(description="a live stream on air now")
    viewers: int | None = Field(description="current viewers while live (as ingest reports)")


class IngestUrls(BaseModel):
    rtmp: str | None = Field(description="rtmp://HOST:PORT/live/STREAM_KEY; null when control "
                                         "was not told where ingest listens (--ingest-rtmp)")
    srt: str | None = Field(description="srt://HOST:PORT?streamid=publish:STREAM_KEY; null "
                                        "without --ingest-srt")


class LiveCreated(BaseModel):
    """The live stream: its video, and its stream key (shown this once)"""

    video: Video
    stream_key: str
    ingest: IngestUrls
    dvr_seconds: int


class StreamKey(BaseModel):
    """A new stream key (shown this once): the old one no longer works"""

    stream_key: str
    ingest: IngestUrls


class LiveStatus(BaseModel):
    """The live stream, as its owner sees it (never its key)"""

    video: Video
    dvr_seconds: int
    publisher: Literal["none", "authorized", "connected", "gone"] = Field(
        description="gone: the stream waits `grace_ends_at` for the publisher to come back")
    grace_ends_at: str | None
    ended_at: str | None
    ingest: IngestUrls = Field(description="where to publish, without the key (`STREAM_KEY`)")


class Admission(BaseModel):
    """Publish: the stream this key is for"""

    video_id: str
    publisher: str = Field(description="this publisher's handle, `{video_id}.{n}`, for the "
                                       "calls that follow")
    dvr_seconds: int
    resume: bool = Field(description="a publisher came back within the grace period: continue "
                                     "the same stream (a discontinuity at most)")
    heartbeat_seconds: float = Field(description="how often to send a heartbeat")
    grace_seconds: float


class StreamState(BaseModel):
    """The stream as control sees it now"""

    video_id: str
    state: Literal["queued", "processing", "ready", "failed", "waiting", "live"]
    end: bool = Field(description="the stream is over (its owner ended it, or its publisher "
                                  "was gone longer than the grace period): stop publishing, make "
                                  "the VOD and report it")
    disconnect: bool = Field(description="this publisher no longer holds the stream (its key "
                                         "was rotated, or another publisher took over): cut it off")
    grace_seconds: float


class TrendingVideo(Video):
    recent_views: int


class Page(BaseModel):
    next_cursor: str | None = Field(description="pass back as `cursor` for the next page")


class VideoPage(Page):
    """A page of videos"""

    items: list[Video]


class TrendingPage(Page):
    """A page of videos, most viewed recently first"""

    items: list[TrendingVideo]


class Copied(BaseModel):
    """The copies"""

    items: list[Video]


class JobRef(BaseModel):
    id: str


class UploadAccepted(BaseModel):
    """The upload's video (duplicate: the video you already uploaded with these bytes)"""

    video: Video
    job: JobRef | None
    duplicate: bool


class UploadStatus(BaseModel):
    """The upload"""

    id: str
    offset: int
    length: int
    metadata: dict[str, str]
    video_id: str | None
    expires_at: str


class Review(BaseModel):
    """A review"""

    user: UserRef
    rating: int
    text: str
    created_at: str
    updated_at: str


class ReviewPage(Page):
    """A page of reviews, with their count and average"""

    items: list[Review]
    count: int
    average: float | None


class Rating(BaseModel):
    """Like and dislike counts, and yours (null when signed out)"""

    likes: int
    dislikes: int
    my_rating: Literal["like", "dislike", "none"] | None


class Comment(BaseModel):
    """A comment"""

    id: str
    video_id: str
    parent_id: str | None
    user: UserRef
    text: str
    created_at: str
    reply_count: int


class CommentPage(Page):
    """A page of comments"""

    items: list[Comment]


class Following(BaseModel):
    """Whether you follow a user"""

    following: bool


class Views(BaseModel):
    """The view count; `counted` is false when you were counted in this window already"""

    views: int
    counted: bool


class ClaimedJob(BaseModel):
    id: str = Field(description="lease handle `{job}.{attempt}`")
    video_id: str
    source_key: str = Field(examples=["sources/abc123/source"])
    output_prefix: str = Field(examples=["vod/abc123/"])
    lease_seconds: float
    attempt: int = Field(ge=1)


class Claimed(BaseModel):
    """A job is yours"""

    job: ClaimedJob


class Lease(BaseModel):
    """Lease renewed"""

    lease_seconds: float


class JobState(BaseModel):
    id: str
    state: Literal["queued", "claimed", "done", "failed"]


class VideoState(BaseModel):
    id: str
    state: Literal["ready"]


class Completed(BaseModel):
    """Recorded: the video is ready"""

    job: JobState
    video: VideoState


class FailedJob(JobState):
    attempts: int
    retry: bool
    retry_in_seconds: float | None = None


class Failed(BaseModel):
    """Recorded: retried after a backoff, or failed for good"""

    job: FailedJob


class Health(BaseModel):
    """Healthy"""

    status: Literal["ok"]
